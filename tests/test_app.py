"""The web app: utils/app/ (uploads, cache, results, render, files, access, texts), its handlers called in
this process, the app served in this process for the requests a client controls, and main() stopped by
SIGTERM."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from dataset import DATASET_NAMES, DatasetError, categories_of
from model.detector import AnomalyDetector, AnomalyResult, Detection, ScoringSettings
from scripts import app as app_script
from scripts import demo
from tests.app_server import app_config, call, file_data, served, upload
from tests.test_detector import FakeEngine, Row, nothing, with_instance
from utils.app import access, render
from utils.app.access import AUTH_ENV, LoginGuard, exposure_warning, read_auth
from utils.app.cache import (
    BOX_FLOOR,
    EncodeCache,
    SessionStore,
    load_references,
    lower_box_threshold_to_floor,
    session_detector,
)
from utils.app.files import SessionFolders, full_size_mask, private_root, safe_stem, write_downloads
from utils.app.handlers import AppHandlers, parse_names, slider
from utils.app.results import engine_calls, result_json, rethreshold, summary_rows
from utils.app.texts import EXAMPLES, category_choices, missing_model_message, visual_problem
from utils.app.uploads import DISPLAY_SIDE, PictureCache, make_picture, read_upload, upload_paths, with_parent
from utils.config.cli import run
from utils.config.loading import ConfigError
from utils.evaluation.thresholds import read_thresholds

REPO = Path(__file__).resolve().parents[1]


def floored(detector: AnomalyDetector) -> AnomalyDetector:
    return lower_box_threshold_to_floor(detector)


def test_lowered_box_floor_reaches_the_detections():
    """A 0.1-score instance is cut at the default box_threshold 0.3 and kept once the app lowers the floor."""

    def make_row(i: int, prompt: str) -> Row:
        return with_instance(nothing(), 0, (2, 6, 2, 6), 0.1)

    detector = AnomalyDetector(FakeEngine(make_row), ScoringSettings(map_source="instance", sigma=0.0))
    frame = np.zeros((16, 16, 3), np.uint8)
    assert detector.detect_arrays([frame], ["crack"])[0].detections == []
    kept = floored(detector).detect_arrays([frame], ["crack"])[0].detections
    assert [(d.prompt, round(d.score, 5)) for d in kept] == [("crack", 0.1)]


def small_result() -> AnomalyResult:
    amap = np.array([[0.1, 0.5], [0.7, 0.9]], np.float32)
    m1, m2 = np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [1, 1]], bool)
    detections = [Detection("crack", 0.8, (0, 0, 1, 1), m2), Detection("hole", 0.2, (0, 0, 1, 0), m1)]
    return AnomalyResult(amap, 0.9, {"crack": 0.9, "hole": 0.4}, {"crack": 0.8, "hole": 0.2}, detections)


def test_rethreshold_and_json_with_rle_boxes_sizes_and_counts():
    result = small_result()
    cut = rethreshold(result, 0.5, 0.3)
    assert cut.mask.tolist() == [[False, True], [True, True]] and [d.prompt for d in cut.detections] == [
        "crack"
    ]
    cut = rethreshold(result, 0.95, 0.1)
    assert not cut.mask.any() and [d.prompt for d in cut.detections] == ["crack", "hole"]
    doc = result_json(result, rethreshold(result, 0.6, 0.1), None, {"vision_calls": 3}, image_size=(20, 20))
    assert doc["mask_pixels"] == 2 and doc["image_score"] == 0.9 and doc["prompts"] == ["crack", "hole"]
    assert (
        doc["image_size"] == [20, 20]
        and doc["scored_size"] == [2, 2]
        and doc["engine_calls"]["vision_calls"] == 3
    )
    for box, d in zip(doc["boxes"], result.detections, strict=True):
        rle = {"size": box["rle"]["size"], "counts": box["rle"]["counts"].encode()}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), d.mask)
    assert summary_rows([doc]) == [[None, 0.9, 2, 2]]


def test_cache_runs_sam3_once_per_image_and_prompts_and_reports_progress(tiny_engine):
    detector = floored(AnomalyDetector(tiny_engine, ScoringSettings()))
    assert detector.settings.box_threshold == BOX_FLOOR
    cache = EncodeCache(size=3)
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3))
    before, steps = engine_calls(detector)["vision_calls"], []
    first = cache.results(
        detector, [a, b, a], ["scratch"], None, batch_size=1, progress=lambda *s: steps.append(s)
    )
    assert first[0] is first[2] and engine_calls(detector)["vision_calls"] == before + 2  # a repeated: once
    assert steps == [(0, 2), (1, 2), (2, 2)]
    again = cache.results(detector, [b, a.copy()], ["scratch"], None)  # same pixels: cached
    assert again == [first[1], first[0]] and engine_calls(detector)["vision_calls"] == before + 2
    cache.results(detector, [a], ["dent"], None)  # other prompts: a new pass
    cache.results(detector, [c], ["scratch"], None)
    assert engine_calls(detector)["vision_calls"] == before + 4 and len(cache) == 3  # oldest dropped
    assert cache.nbytes >= 3 * 48 * 64 * 4  # three float32 maps at least


def test_references_switch_a_session_to_fewshot(tiny_engine, tmp_path):
    detector = floored(AnomalyDetector(tiny_engine, ScoringSettings()))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    goods = []
    for i in range(2):
        goods.append(str(tmp_path / f"good{i}.png"))
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(goods[-1])
    assert load_references(detector, [], None) is None
    refs = load_references(detector, goods, None)
    assert refs.names == ["good0.png", "good1.png"] and refs.bank.num_references == 2
    calls = engine_calls(detector)["vision_calls"]
    assert load_references(detector, list(goods), refs) is refs  # same pictures: not encoded again
    cache = EncodeCache()
    [zero] = cache.results(detector, [image], ["scratch"], None)
    [few] = cache.results(detector, [image], ["scratch"], None, refs)  # references in the key: a new pass
    assert engine_calls(detector)["vision_calls"] == calls + 2
    assert not np.array_equal(zero.anomaly_map, few.anomaly_map)
    assert detector.settings.visual == "none" and detector.references is None  # the shared one is untouched
    view = session_detector(detector, refs)
    assert (
        view.engine is detector.engine and view.settings.visual == "fewshot" and view.references is refs.bank
    )
    doc = result_json(few, rethreshold(few, 0.5, 0.3), ["scratch"], image="x.png", references=refs.names)
    assert doc["visual"] == "fewshot" and doc["references"] == ["good0.png", "good1.png"]
    fewshot_app = floored(AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot")))
    with pytest.raises(DatasetError, match="reference good images") as err:
        session_detector(fewshot_app, None)
    assert "--" not in str(err.value)  # page wording


def test_upload_names_keep_their_folder(tmp_path):
    """The browser's relative names give each file of a dropped folder its parent folder; a repeated name
    gets a number; other files of the folder are left out."""
    crack, good = tmp_path / "h1" / "000.png", tmp_path / "h2" / "000.png"  # gradio: one hash folder each
    for path in (crack, good):
        path.parent.mkdir()
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    (tmp_path / "notes.txt").write_text("x")
    browser = ["parts/crack/000.png", "parts/notes.txt", "parts/good/000.png"]
    folder = [str(crack), str(tmp_path / "notes.txt"), str(good)]
    assert upload_paths(None, folder, browser) == [(crack, "crack/000.png"), (good, "good/000.png")]
    assert upload_paths(None, folder) == [(crack, "000.png"), (good, "000.png (2)")]  # no names: file names
    assert with_parent([crack], ["x/other.png"]) == ["000.png"]
    assert (
        parse_names('["a/b.png", 3]') == ["a/b.png"]
        and parse_names("{not json") == []
        and parse_names(None) == []
    )
    with pytest.raises(DatasetError, match="no image files"):
        upload_paths(None, [str(tmp_path / "notes.txt")])
    assert safe_stem("crack/000.png") == "crack_000" and safe_stem("../../etc/passwd.png") == "etc_passwd"
    assert safe_stem("a b?.png") == "a_b_" and safe_stem("..") == "image" and safe_stem(None) == "image"


def test_pictures_are_display_sized_and_decoded_once(tmp_path):
    """A 3000 x 2000 image: SAM 3 scores a copy whose short side is its input side, the page gets a copy
    whose long side is DISPLAY_SIDE; a second read of the same file decodes nothing."""
    image = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    picture = make_picture("big.png", image, 1008)
    assert picture.size == (2000, 3000) and picture.scored.shape == (1008, 1512, 3)
    assert picture.display.shape == (683, DISPLAY_SIDE, 3)
    small = make_picture("s.png", image[:100, :200], 1008)
    assert small.scored.shape == small.display.shape == (100, 200, 3)  # never enlarged
    path = tmp_path / "big.png"
    Image.fromarray(image[:600, :900]).save(path)
    cache = PictureCache()
    [first], errors = cache.read([(path, "big.png")], 224)
    [again], _ = cache.read([(path, "big.png")], 224)
    assert again is first and errors == [] and first.display.shape == (600, 900, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    pictures, errors = cache.read([(tmp_path / "bad.png", "x/bad.png"), (path, "big.png")], 224)
    assert len(pictures) == 1 and len(errors) == 1 and errors[0].startswith("x/bad.png cannot be decoded")


def test_downloads_are_full_size_private_and_keep_folders(tmp_path):
    result = small_result()
    cut = rethreshold(result, 0.6, 0.1)
    full = full_size_mask(cut.mask, (20, 30))
    assert full.shape == (20, 30) and full[:10, :15].sum() == 0 and full[10:, :].all()
    docs = [
        result_json(result, cut, None, image=name) for name in ("crack/000.png", "good/000.png", "../x.png")
    ]
    out = tmp_path / "session"
    (out.mkdir(), (out / "stale.png").write_bytes(b"old"))
    paths = write_downloads(out, docs, [full, ~full, full])
    assert [p.name for p in paths] == [
        "results.json",
        "crack_000_mask.png",
        "good_000_mask.png",
        "x_mask.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # earlier files gone
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}
    assert np.array_equal(np.array(Image.open(paths[1])) > 0, full)
    assert json.loads(paths[0].read_text())["images"][1]["image"] == "good/000.png"
    root = private_root(tmp_path)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and root.name.startswith("sam3_app_")


def test_session_folders_belong_to_their_user(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    folders = SessionFolders(root)
    attacked = folders.folder("../victim", "ann")
    assert attacked.parent == root and attacked.name.startswith("session_")  # the id is no path component
    assert folders.folder("../victim", "ann") == attacked and folders.owner("../victim") == "ann"
    for other in (None, "bob"):  # another login (or none) with the same id never gets ann's folder
        with pytest.raises(PermissionError, match="belongs to another login"):
            folders.folder("../victim", other)
    (attacked / "results.json").write_text("{}")
    assert not folders.forget("..") and not folders.forget("../victim")  # never served / not the owner
    assert not folders.forget("../victim", "bob") and (attacked / "results.json").is_file()
    assert folders.forget("../victim", "ann") and not attacked.exists() and root.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_session_store_is_bounded_oldest_first():
    dropped = []
    store = SessionStore(max_sessions=2, max_bytes=10_000, on_drop=dropped.append)
    for name in ("a", "b", "c"):
        store.get(name)
    store.get("b")  # used again: now the newest
    assert store.trim() == ["a"] and dropped == ["a"] and "a" not in store and len(store) == 2
    store.get("c").pictures.read  # noqa: B018  (a session holding pictures)
    big = make_picture("x.png", np.zeros((60, 60, 3), np.uint8), 8)
    store.get("c").pictures._pictures[("k",)] = big  # 21600 bytes > max_bytes
    assert store.trim() == ["b"] and len(store) == 1  # the session in use is kept even over the limit
    assert store.get("z", "ann").owner == "ann" and store.owner("z") == "ann" and store.owner("nope") is None


def test_pictures_badges_and_notes():
    display = np.full((40, 60, 3), 128, np.uint8)
    amap = np.linspace(0.2, 0.3, 20 * 30, dtype=np.float32).reshape(20, 30)
    fixed = render.heatmap_picture(display, amap, "fixed")
    spread = render.heatmap_picture(display, amap, "image")
    assert fixed.shape == spread.shape == display.shape  # same size as the input panel
    assert render.colour_range(amap, "image") == pytest.approx((0.2, 0.3)) and render.colour_range(
        amap, "fixed"
    ) == (0, 1)
    assert np.ptp(spread.astype(int), axis=(0, 1)).max() > 2 * np.ptp(fixed.astype(int), axis=(0, 1)).max()
    assert "0.3" in render.colour_bar_html(0.2, 0.3) and "linear-gradient" in render.colour_bar_html(0, 1)
    mask = np.zeros((20, 30), bool)
    assert render.mask_note(mask, 0.5).startswith("no anomalous pixel")
    assert render.mask_note(~mask, 0.1).startswith("whole image above threshold")
    mask[:10, :15] = True
    assert render.mask_note(mask, 0.5) == "25.00 % of the pixels at or above 0.5"
    tinted = render.mask_picture(display, mask)
    assert tinted.shape == display.shape and (tinted[5, 5] != 128).any() and (tinted[35, 55] == 128).all()
    boxed = render.boxes_picture(display, [Detection("crack", 0.9, (0, 0, 15, 10))], (20, 30))
    assert boxed.shape == display.shape and (boxed[:21, :31] != display[:21, :31]).any()
    assert "ANOMALOUS" in render.verdict_html(0.7, 0.5, "f") and "verdict-bad" in render.verdict_html(
        0.7, 0.5, "f"
    )
    ok = render.verdict_html(0.3, 0.5, "image_f1_threshold of category bottle in <t.json>")
    assert ">OK<" in ok and "verdict-ok" in ok and "&lt;t.json&gt;" in ok
    assert "no verdict" in render.verdict_html(0.3, None, "why")


def test_login_from_a_file_or_the_environment_and_slowed_then_locked(tmp_path, monkeypatch):
    secrets = tmp_path / "auth.txt"
    secrets.write_text("ann:s3:cret\n\nbob:pw\n")
    assert read_auth(None, str(secrets), {}) == [("ann", "s3:cret"), ("bob", "pw")]
    assert read_auth(None, None, {AUTH_ENV: "eve:x"}) == [("eve", "x")]
    assert read_auth("ann:p", None, {}) == [("ann", "p")] and read_auth(None, None, {}) is None
    with pytest.raises(ConfigError, match=r"^--auth_file .*missing: No such file"):
        read_auth(None, str(tmp_path / "missing"), {})
    with pytest.raises(ConfigError, match="^--auth: expected USER:PASSWORD"):
        read_auth("ann", None, {})
    waits = []

    async def no_wait(seconds):
        waits.append(seconds)

    monkeypatch.setattr(access.asyncio, "sleep", no_wait)
    now = [0.0]
    guard = LoginGuard([("ann", "right")], clock=lambda: now[0])
    check = lambda user, password: asyncio.run(guard(user, password))  # noqa: E731
    assert check("ann", "right") and waits == []
    assert [check("ann", "wrong") for _ in range(access.MAX_FAILURES)] == [False] * access.MAX_FAILURES
    assert waits == sorted(waits) and waits[0] > 0  # each failed answer waits at least as long
    assert not check("ann", "right")  # locked: even the right password
    now[0] += access.LOCKOUT_S + 1
    assert check("ann", "right") and not check("bob", "")
    assert (
        exposure_warning("127.0.0.1", False, None) is None
        and exposure_warning("0.0.0.0", True, [("u", "p")]) is None
    )
    warning = exposure_warning("0.0.0.0", False, None)
    assert "--host 0.0.0.0" in warning and "--auth_file" in warning and AUTH_ENV in warning


def test_missing_model_and_mutual_say_what_to_do_in_page_words(tmp_path):
    page = missing_model_message(tmp_path / "nothing")
    console = missing_model_message(tmp_path / "nothing", for_console=True)
    assert "scripts/download_weights.py" in page and "scripts/make_tiny_sam3.py" in page and " --" not in page
    assert "--model_path" in console and "make_tiny_sam3.py" in console
    assert visual_problem("none") is None and visual_problem("fewshot") is None
    assert " --" not in visual_problem("mutual") and "--visual none" in visual_problem(
        "mutual", for_console=True
    )
    with pytest.raises(DatasetError, match="upload an image"):
        read_upload(None)


def test_thresholds_file_reader_is_one_line_for_malformed_files(tmp_path, tiny_sam3_dir, capsys):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"categories": ["bottle"]}))
    with pytest.raises(ConfigError, match=r"\"categories\" is a list, not a mapping .*rerun test.py"):
        read_thresholds(path)
    path.write_text('{"categories": {"bottle": {"pixel_normal_threshold": NaN}}}')
    with pytest.raises(ConfigError, match="bottle has pixel_normal_threshold nan, not a finite number"):
        read_thresholds(path)
    path.write_text('{"categories": {"bottle": {"image_f1_threshold": 0.61}, "wood": 3}}')
    with pytest.raises(ConfigError, match="the entry of wood is a int"):
        read_thresholds(path)
    path.write_text('{"categories": {"bottle": {"image_f1_threshold": 0.61}}}')
    checked = read_thresholds(path)
    assert checked.image_threshold("bottle") == 0.61 and checked.category(None) == "bottle"
    with pytest.raises(ConfigError, match="has no pixel_normal_threshold .*: move the slider"):
        checked.mask_threshold("bottle", "move the slider")
    with pytest.raises(ConfigError, match="has no category 'wood': choose the category one of bottle"):
        checked.category("wood", "choose the category")
    path.write_text(json.dumps({"categories": ["bottle"]}))  # demo --thresholds: one line, no traceback
    argv = ["--image_path", str(EXAMPLES[0]), "--model_path", str(tiny_sam3_dir), "--thresholds", str(path)]
    assert run(demo.main, demo.parse_args, [*argv, "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and str(path) in err and "is a list" in err


def test_categories_and_examples():
    names = category_choices()
    assert names[:2] == ["bottle", "cable"] and "pcb1" in names and len(names) == len(set(names))
    for name in DATASET_NAMES:  # every benchmark of the registry is in the list
        assert set(categories_of(name)) <= set(names), name
    assert all(p.is_file() and p.parent == REPO / "assets" for p in EXAMPLES)


def test_app_without_a_model_says_it_in_full_on_the_page_and_the_console(tmp_path, capsys):
    cfg = app_config(tmp_path / "no_sam3")
    handlers = AppHandlers.load(cfg, tmp_path)
    blocks = app_script.layout(handlers)
    status = [c.value for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "status"]
    assert status == [missing_model_message(tmp_path / "no_sam3")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    assert run(app_script.main, app_script.parse_args, ["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not valid YAML" in err and "\n" not in err and str(bad) in err


def request(session: str, user: str | None = None) -> SimpleNamespace:
    """What a handler reads of gradio's Request: the session hash and the logged-in user."""
    return SimpleNamespace(session_hash=session, username=user)


def no_progress(*args, **kwargs) -> None:
    return None


@pytest.fixture(scope="module")
def handlers(tiny_sam3_dir, tmp_path_factory):
    """The app's handlers on the tiny model, with a thresholds file for bottle, outside any server."""
    folder = tmp_path_factory.mktemp("handlers")
    thresholds = folder / "thresholds.json"
    entries = {"bottle": {"pixel_normal_threshold": 0.42, "image_f1_threshold": 0.01}}
    thresholds.write_text(json.dumps({"categories": entries}))
    return AppHandlers.load(app_config(tiny_sam3_dir, "--thresholds", str(thresholds)), private_root(folder))


def run_inputs(files, category="", selected=None, mask_t=0.5, folder=None, names="", prompts=""):
    return [files, folder, names, category, "base", prompts, None, selected, mask_t, 0.3, "fixed"]


def test_handlers_show_display_sized_pictures_and_say_where_thresholds_come_from(handlers, tmp_path):
    """A 2400 x 1600 upload: every picture the page gets is display-sized and the same size; switching and a
    rerun run no SAM 3; the verdict and the mask threshold name the thresholds file."""
    big = tmp_path / "crack" / "big.png"
    big.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1600, 2400, 3), dtype=np.uint8)).save(big)
    files = [str(big), str(EXAMPLES[0])]
    out = handlers.run(*run_inputs(files, "bottle"), request=request("s1", "ann"), progress=no_progress)
    picture_in, overlay, bar, _, mask, boxes, verdict, note, doc = out[:9]
    assert picture_in.shape == overlay.shape == mask.shape == boxes.shape == (683, 1024, 3)
    assert out[-2] == "Done (Run 1): 2 image(s)." and out[-1] == 0.42  # the file's mask threshold
    assert "ANOMALOUS" in verdict and "image_f1_threshold of category bottle" in verdict
    assert (
        "Mask threshold 0.42 from pixel_normal_threshold of category bottle" in note and "colour-bar" in bar
    )
    doc = json.loads(doc)
    assert doc["image"] == "big.png" and doc["image_size"] == [1600, 2400] and doc["scored_size"][1] <= 2400
    calls = engine_calls(handlers.detector)
    start = time.perf_counter()
    shown = handlers.show("demo_scratch.png", 0.42, 0.3, "image", request("s1", "ann"))
    assert shown[0].shape == (512, 512, 3) and time.perf_counter() - start < 1.0
    cut = handlers.recut("big.png", 0.3, 0.3, request("s1", "ann"))
    assert "set by the slider (pixel_normal_threshold of category bottle" in cut[3]
    again = handlers.run(
        *run_inputs(files, "bottle", "demo_scratch.png"), request=request("s1", "ann"), progress=no_progress
    )
    assert engine_calls(handlers.detector) == calls and json.loads(again[8])["image"] == "demo_scratch.png"
    rows, downloads = handlers.overview(0.42, 0.3, request("s1", "ann"))
    assert [r[0] for r in rows] == ["big.png", "demo_scratch.png"]
    assert Image.open(Path(downloads[1])).size == (2400, 1600)  # the download is full size
    # gradio's heartbeat asks no login: a disconnect seen without the user (or by another) deletes nothing
    handlers.forget(request("s1", None))
    handlers.forget(request("s1", "bob"))
    assert Path(downloads[0]).is_file() and "s1" in handlers.sessions
    handlers.forget(request("s1", "ann"))
    assert not Path(downloads[0]).parent.exists() and "s1" not in handlers.sessions


def test_handler_errors_go_to_the_status_in_page_words(handlers, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    out = handlers.run(
        *run_inputs([str(tmp_path / "notes.txt")]), request=request("s2"), progress=no_progress
    )
    assert out[-2].startswith("**Error (Run 1):** notes.txt is a .txt file") and out[0] is None
    out = handlers.run(*run_inputs([str(EXAMPLES[0])], "wood"), request=request("s2"), progress=no_progress)
    assert "has no category 'wood': choose the category one of bottle" in out[-2] and " --" not in out[-2]
    out = handlers.run(*run_inputs([str(EXAMPLES[0])]), request=request("s2"), progress=no_progress)
    assert "pick a category of the thresholds file" in out[6]


def heartbeat_closed(port: int, session_hash: str) -> None:
    """Open the session's heartbeat stream as a browser tab does, then close it (gradio runs the unload
    handlers). http.client sends the path as written (no `..` folding)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", f"/gradio_api/heartbeat/{session_hash}")
    answer = connection.getresponse()
    assert answer.status == 200 and answer.read(5) == b"data:"
    connection.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_attacking_requests_change_nothing_outside_the_apps_folder(tiny_sam3_dir, tmp_path):
    """A running app (in this process) gets what the browser client controls: a session id `../victim`, a
    heartbeat for `..`, a file path on the server that was never uploaded, and a too large upload; every
    file it writes stays inside its private folder."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    shutil.copy(REPO / "assets" / "demo_scratch.png", victim / "photo.png")
    before = snapshot(victim)
    with served(tiny_sam3_dir, tmp_path, "--max_upload_mb", "1") as app:
        root = app.handlers.root
        assert root.parent == tmp_path and stat.S_IMODE(root.stat().st_mode) == 0o700
        image = upload(app.local_url, REPO / "assets" / "demo_scratch.png")
        assert Path(image["path"]).is_relative_to(root)  # gradio's copy of the upload: inside the root
        done = call(app.local_url, "run", run_inputs([image]), session_hash="../victim")
        assert done["success"] and "Done (Run 1): 1 image" in str(done["output"]["data"])
        assert call(app.local_url, "overview", [0.5, 0.3], session_hash="../victim")["success"]
        [folder] = root.glob("session_*")  # the session's downloads: a folder the server named
        assert sorted(p.name for p in folder.iterdir()) == ["demo_scratch_mask.png", "results.json"]
        stolen = call(app.local_url, "run", run_inputs([file_data(victim / "photo.png")]))
        assert not stolen["success"]  # gradio refuses a path that was not uploaded: nothing is read
        big = tmp_path / "big.bin"
        big.write_bytes(b"\0" * (2 << 20))
        with httpx.Client(base_url=app.local_url) as client, big.open("rb") as f:
            assert client.post("/gradio_api/upload", files={"files": ("big.png", f)}).status_code == 413
        heartbeat_closed(app.server_port, "..")
        call(app.local_url, "run", run_inputs([image]), session_hash="served")
        call(app.local_url, "overview", [0.5, 0.3], session_hash="served")
        assert len(list(root.glob("session_*"))) == 2
        heartbeat_closed(app.server_port, "served")  # no login in this app: a tab the app served closes
        for _ in range(100):
            if len(list(root.glob("session_*"))) == 1:
                break
            time.sleep(0.05)
        assert list(root.glob("session_*")) == [folder]
        assert snapshot(victim) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, "victim", "big.bin"])
    assert not root.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_removes_everything_the_app_wrote(tmp_path, monkeypatch, capsys):
    """scripts/app.py main() in this process (no model: it starts at once; the login from the environment):
    a client logs in and uploads, then this process gets SIGTERM; main returns 0 and the app's private
    folder, gradio's copy of the upload included, is gone (a start under another process's SIGTERM would
    leave it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv(AUTH_ENV, "ann:pw")
    monkeypatch.setenv("GRADIO_TEMP_DIR", os.environ.get("GRADIO_TEMP_DIR", ""))  # main() sets it: restored
    port, seen = free_port(), {}

    def client() -> None:
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(url, timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            with httpx.Client(base_url=url) as session:
                seen["login"] = session.post("/login", data={"username": "ann", "password": "pw"}).status_code
                with (REPO / "assets" / "demo_good.png").open("rb") as f:
                    [copy] = session.post("/gradio_api/upload", files={"files": ("good.png", f)}).json()
            seen["copy"] = Path(copy)
            seen["mode"] = stat.S_IMODE(Path(copy).stat().st_mode)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    before, umask = signal.getsignal(signal.SIGTERM), os.umask(0o022)
    os.umask(umask)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        argv = ["--model_path", str(tmp_path / "none"), "--port", str(port)]
        assert run(app_script.main, app_script.parse_args, argv) == 0
    finally:
        thread.join()
        signal.signal(signal.SIGTERM, before)
        os.umask(umask)
    assert seen["login"] in (200, 302, 303) and seen["mode"] == 0o600
    assert seen["copy"].parent.parent.parent.name.startswith("sam3_app_")  # root/gradio/<hash>/good.png
    assert list(tmp_path.iterdir()) == []  # nothing left: the root and the upload are gone
    err = capsys.readouterr().err
    assert "No SAM 3 model in" in err and "--model_path" in err and "make_tiny_sam3.py" in err


# --- hostile requests: what a client sends through the API, beyond the page's own controls ---------------


def test_deeply_nested_folder_names_are_no_names():
    assert parse_names("[" * 100_000 + "]" * 100_000) == [] and parse_names('[["a"], "b"]') == ["b"]


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 0.4), ("0.5", 0.4), (float("nan"), 0.4), (True, 0.4), (2, 1.0)]
)
def test_slider_values_from_a_client_are_numbers_in_range(value, expected):
    assert slider(value, 0.4, 0.05) == expected and slider(-1.0, 0.4, 0.05) == 0.05


def small_images(folder: Path, *names: str) -> list[str]:
    """32 x 24 RGB PNGs (SAM 3's cost is that of its input size: these keep a Run well under a second)."""
    paths = []
    for k, name in enumerate(names):
        pixels = np.random.default_rng(k).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        paths.append(str(folder / name))
    return paths


def test_run_with_client_chosen_values_answers_in_the_status(handlers, tmp_path):
    """No strategy, sliders that are no numbers, one reference path as a string and a GIF upload: scored;
    an unknown strategy is one status line."""
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    inputs = run_inputs([str(tmp_path / "anim.gif")], mask_t=None, prompts="crack")
    inputs[4], inputs[9] = None, "x"  # strategy, box slider
    inputs[6] = small_images(tmp_path, "good.png")[0]  # the references: one path, not a list
    out = handlers.run(*inputs, request=request("odd"), progress=no_progress)
    assert out[-2] == "Done (Run 1): 1 image(s)." and out[-1] == handlers.cfg.demo.mask_threshold
    doc = json.loads(out[8])
    assert doc["references"] == ["good.png"] and doc["image_size"] == [20, 30]
    inputs[4] = "../nope"
    out = handlers.run(*inputs, request=request("odd"), progress=no_progress)
    assert out[-2].startswith("**Error (Run 2):** unknown prompt strategy '../nope': choose one of base")


def test_another_login_with_a_known_session_id_sees_and_changes_nothing(handlers, tmp_path):
    mine, other = small_images(tmp_path, "mine.png", "other.png")
    handlers.run(
        *run_inputs([mine], prompts="crack"), request=request("ann-tab", "ann"), progress=no_progress
    )
    _, [json_file, mask_file] = handlers.overview(0.5, 0.3, request("ann-tab", "ann"))
    for intruder in ("bob", None):
        assert handlers.show(None, 0.5, 0.3, "fixed", request("ann-tab", intruder))[0] == gr.skip()
        assert handlers.overview(0.5, 0.3, request("ann-tab", intruder)) == (None, None)
    handlers.run(
        *run_inputs([other], prompts="crack"), request=request("ann-tab", "bob"), progress=no_progress
    )
    assert [r.name for r in handlers.sessions.get("ann-tab", "ann").runs] == ["mine.png"]
    assert json.loads(Path(json_file).read_text())["images"][0]["image"] == "mine.png"
    assert Path(mask_file).is_file()


def test_overviews_of_one_tab_at_once_rewrite_its_downloads_one_at_a_time(handlers, tmp_path):
    files = small_images(tmp_path, "a.png", "b.png")
    handlers.run(*run_inputs(files, prompts="crack"), request=request("busy"), progress=no_progress)
    errors, done = [], []

    def overview():
        try:
            done.append(handlers.overview(0.5, 0.3, request("busy"))[1])
        except Exception as err:  # noqa: BLE001  (any error of a thread is the finding)
            errors.append(err)

    threads = [threading.Thread(target=overview) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(done) == 6
    assert sorted(p.name for p in Path(done[0][0]).parent.iterdir()) == [
        "a_mask.png",
        "b_mask.png",
        "results.json",
    ]


def test_auth_file_with_a_byte_order_mark_or_not_text(tmp_path):
    (tmp_path / "auth.txt").write_text("\ufeffann:pw\r\n", encoding="utf-8")
    users = read_auth(None, str(tmp_path / "auth.txt"), environ={})
    assert users == [("ann", "pw")] and asyncio.run(LoginGuard(users)("ann", "pw"))
    assert not LoginGuard(users).right(None, None)  # type: ignore[arg-type]
    (tmp_path / "auth.txt").write_bytes(b"\xff\xfe\x00ann")
    with pytest.raises(ConfigError, match="is not UTF-8 text: write one USER:PASSWORD a line"):
        read_auth(None, str(tmp_path / "auth.txt"), environ={})


def test_session_sizes_are_read_while_another_run_adds_results():
    """SessionStore.trim sums every session's bytes while another session's Run fills its caches."""
    cache, pictures, stop = EncodeCache(size=10_000), PictureCache(size=10_000), threading.Event()
    result = AnomalyResult(np.zeros((2, 2), np.float32), 0.0, {}, {})
    picture = make_picture("x.png", np.zeros((4, 4, 3), np.uint8), 4)

    def fill() -> None:
        k = 0
        while not stop.is_set():
            cache._results[(k,)], pictures._pictures[(k,)] = result, picture
            cache._results.popitem(last=False) if len(cache) > 200 else None
            pictures._pictures.popitem(last=False) if k > 200 else None
            k += 1

    thread, interval = threading.Thread(target=fill), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a sum over a live dict view breaks
    thread.start()
    try:
        for _ in range(400):
            assert cache.nbytes >= 0 and pictures.nbytes >= 0
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
