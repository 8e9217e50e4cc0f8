"""utils/app.py: re-thresholding, the per-session encode cache, the JSON, the missing-model message."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from dataset import DATASET_NAMES, DatasetError, categories_of
from model.detector import AnomalyDetector, AnomalyResult, Detection, ScoringSettings
from scripts import app as app_script
from tests.app_server import call, file_data, served, upload
from tests.test_detector import FakeEngine, Row, nothing, with_instance
from utils.app import (
    BOX_FLOOR,
    EXAMPLES,
    EncodeCache,
    Session,
    SessionFolders,
    category_choices,
    engine_calls,
    exposure_warning,
    image_threshold_from,
    load_references,
    lower_box_threshold_to_floor,
    missing_model_message,
    parse_prompts,
    read_upload,
    read_uploads,
    resolve_prompts,
    result_json,
    rethreshold,
    safe_stem,
    score_line,
    session_detector,
    summary_rows,
    unique_names,
    upload_paths,
    visual_problem,
    with_colour_bar,
    write_downloads,
)
from utils.config.cli import config_from_args, run

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


def test_rethreshold_cuts_mask_and_boxes():
    result = small_result()
    cut = rethreshold(result, 0.5, 0.3)
    assert cut.mask.tolist() == [[False, True], [True, True]]
    assert [d.prompt for d in cut.detections] == ["crack"]
    cut = rethreshold(result, 0.95, 0.1)
    assert not cut.mask.any() and [d.prompt for d in cut.detections] == ["crack", "hole"]


def test_result_json_has_rle_boxes_and_counts():
    result = small_result()
    doc = result_json(result, rethreshold(result, 0.6, 0.1), None, {"vision_calls": 3, "text_calls": 2})
    assert doc["mask_pixels"] == 2 and doc["image_score"] == 0.9 and doc["prompts"] == ["crack", "hole"]
    assert doc["engine_calls"] == {"vision_calls": 3, "text_calls": 2}
    for box, d in zip(doc["boxes"], result.detections, strict=True):
        rle = {"size": box["rle"]["size"], "counts": box["rle"]["counts"].encode()}
        assert np.array_equal(coco_mask.decode(rle).astype(bool), d.mask)


def test_cache_runs_sam3_once_per_image_and_prompts(tiny_engine):
    detector = floored(AnomalyDetector(tiny_engine, ScoringSettings()))
    assert detector.settings.box_threshold == BOX_FLOOR
    cache = EncodeCache(size=3)
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3))
    before = engine_calls(detector)["vision_calls"]
    first = cache.results(detector, [a, b, a], ["scratch"], None, batch_size=1)  # a repeated: scored once
    assert first[0] is first[2] and engine_calls(detector)["vision_calls"] == before + 2
    again = cache.results(detector, [b, a.copy()], ["scratch"], None)  # same pixels: cached
    assert again == [first[1], first[0]] and engine_calls(detector)["vision_calls"] == before + 2
    cache.results(detector, [a], ["dent"], None)  # other prompts: a new pass
    cache.results(detector, [c], ["scratch"], None)
    assert engine_calls(detector)["vision_calls"] == before + 4 and len(cache) == 3  # oldest dropped


def test_zero_shot_results_are_the_detectors_own(tiny_engine):
    """Without references the app calls the shared detector unchanged: bit-identical to detect()."""
    detector = floored(AnomalyDetector(tiny_engine, ScoringSettings()))
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    [cached] = EncodeCache().results(detector, [image], ["scratch", "dent"], None)
    direct = detector.detect(image, prompts=["scratch", "dent"])
    assert np.array_equal(cached.anomaly_map, direct.anomaly_map) and cached.image_score == direct.image_score
    assert session_detector(detector, None) is detector


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
    assert engine_calls(detector)["vision_calls"] == calls
    cache = EncodeCache()
    [zero] = cache.results(detector, [image], ["scratch"], None)
    [few] = cache.results(detector, [image], ["scratch"], None, refs)  # references in the key: a new pass
    assert engine_calls(detector)["vision_calls"] == calls + 2
    assert not np.array_equal(zero.anomaly_map, few.anomaly_map)
    # the shared detector stays zero-shot (other sessions), the view carries this session's bank
    assert detector.settings.visual == "none" and detector.references is None
    view = session_detector(detector, refs)
    assert (
        view.engine is detector.engine and view.settings.visual == "fewshot" and view.references is refs.bank
    )
    doc = result_json(few, rethreshold(few, 0.5, 0.3), ["scratch"], image="x.png", references=refs.names)
    assert doc["visual"] == "fewshot" and doc["references"] == ["good0.png", "good1.png"]
    assert result_json(zero, rethreshold(zero, 0.5, 0.3), ["scratch"])["visual"] == "none"
    fewshot_app = floored(AnomalyDetector(tiny_engine, ScoringSettings(visual="fewshot")))
    with pytest.raises(DatasetError, match="reference good images"):
        session_detector(fewshot_app, None)


def test_prompts_follow_strategy_and_typed_prompts():
    cfg = app_script.config_from_args(app_script.parse_args([]), not_config=app_script.NOT_CONFIG)
    base, noun = resolve_prompts(cfg, "bottle", "base", "")
    contextual, _ = resolve_prompts(cfg, "bottle", "contextual", "")
    assert noun == "bottle" and "defect" in base and "defect on the bottle" in contextual
    assert resolve_prompts(cfg, None, "contextual", "")[0][0] == "defect on the object"
    assert resolve_prompts(cfg, "bottle", "contextual", "dent, hole") == (["dent", "hole"], "bottle")


def test_uploads_names_and_downloads(tmp_path):
    good = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(good)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("x")
    folder = [str(tmp_path / "notes.txt"), str(good)]
    assert upload_paths([str(tmp_path / "bad.png")], folder) == [tmp_path / "bad.png", good]
    assert upload_paths(str(good), None) == [good]
    with pytest.raises(DatasetError, match="no image files"):
        upload_paths(None, [str(tmp_path / "notes.txt")])
    assert unique_names([good, Path("x/a.png"), good]) == ["a.png", "a.png (2)", "a.png (3)"]
    images, errors = read_uploads([tmp_path / "bad.png", good])
    assert [n for n, _ in images] == ["a.png"] and len(errors) == 1 and "bad.png" in errors[0]
    with pytest.raises(DatasetError, match="bad.png"):
        read_uploads([tmp_path / "bad.png"])

    result = small_result()
    cut = rethreshold(result, 0.6, 0.1)
    docs = [result_json(result, cut, None, image=name) for name in ("a.png", "a.jpg")]
    out = tmp_path / "session"
    (out.mkdir(), (out / "stale.png").write_bytes(b"old"))
    paths = write_downloads(out, docs, [cut.mask, ~cut.mask])
    assert [p.name for p in paths] == ["results.json", "a_mask.png", "a_2_mask.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # earlier files gone
    assert json.loads(paths[0].read_text())["images"][1]["image"] == "a.jpg"
    assert np.array_equal(np.array(Image.open(paths[1])) > 0, cut.mask)
    assert np.array_equal(np.array(Image.open(paths[2])) > 0, ~cut.mask)
    assert summary_rows(docs) == [["a.png", 0.9, 2, 2], ["a.jpg", 0.9, 2, 2]]


def test_session_picks_the_selected_image():
    assert Session().run("x") is None
    session = Session()
    session.runs = [type("Run", (), {"name": n})() for n in ("a.png", "b.png")]  # run() reads names only
    assert session.run("b.png").name == "b.png" and session.run("gone.png").name == "a.png"


def test_visual_mutual_is_refused_with_what_to_do():
    assert visual_problem("none") is None and visual_problem("fewshot") is None
    assert "--visual none" in visual_problem("mutual")


def test_inputs_and_missing_model(tmp_path):
    assert parse_prompts(" scratch, , dent ") == ["scratch", "dent"] and parse_prompts("  ") is None
    with pytest.raises(DatasetError, match="upload an image"):
        read_upload(None)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="x.png"):
        read_upload(tmp_path / "x.png")
    message = missing_model_message(tmp_path / "nothing")
    assert "download facebook/sam3" in message and "scripts/download_weights.py" in message


def test_app_starts_without_a_model_and_says_what_to_download(tmp_path):
    args = app_script.parse_args(["--model_path", str(tmp_path / "no_sam3"), "--port", "7861"])
    blocks = app_script.build_app(config_from_args(args, not_config=app_script.NOT_CONFIG))
    status = [c.value for c in blocks.blocks.values() if getattr(c, "elem_id", None) == "status"]
    assert status == [missing_model_message(tmp_path / "no_sam3")]


def test_session_folders_are_made_by_the_server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    folders = SessionFolders(root)
    attacked = folders.folder("../victim")
    assert attacked.parent == root and attacked.name.startswith("session_")  # the id is no path component
    assert folders.folder("../victim") == attacked and folders.folder("other") != attacked
    (attacked / "results.json").write_text("{}")
    folders.forget("..")  # never served: nothing removed
    folders.forget("../other")
    assert (attacked / "results.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    folders.forget("../victim")
    assert not attacked.exists() and root.is_dir()


def test_download_names_stay_in_the_session_folder(tmp_path):
    assert safe_stem("../../etc/passwd.png") == "passwd" and safe_stem("a b?.png") == "a_b_"
    assert safe_stem("..") == "image" and safe_stem(None) == "image" and safe_stem("x.tar.png") == "x.tar"
    result = small_result()
    cut = rethreshold(result, 0.6, 0.1)
    docs = [result_json(result, cut, None, image=name) for name in ("../../out.png", "/abs/..png")]
    out = tmp_path / "session"
    paths = write_downloads(out, docs, [cut.mask, cut.mask])
    assert [p.name for p in paths] == ["results.json", "out_mask.png", "image_mask.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session"]


def test_exposing_the_app_without_auth_warns(capsys):
    assert exposure_warning("127.0.0.1", False, None) is None
    assert exposure_warning("0.0.0.0", True, ("u", "p")) is None
    assert "--host 0.0.0.0" in exposure_warning("0.0.0.0", False, None)
    assert "gradio.live" in exposure_warning("127.0.0.1", True, None)
    assert "--auth USER:PASSWORD" in exposure_warning("0.0.0.0", False, None)
    assert app_script.parse_args(["--auth", "ann:s3:cret"]).auth == ("ann", "s3:cret")
    with pytest.raises(SystemExit):
        app_script.parse_args(["--auth", "ann"])
    assert "expected USER:PASSWORD" in capsys.readouterr().err


def test_app_with_a_bad_config_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    assert run(app_script.main, app_script.parse_args, ["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not valid YAML" in err and "\n" not in err and str(bad) in err


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
    heartbeat for `..`, and a file path on the server that was never uploaded."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    shutil.copy(REPO / "assets" / "demo_scratch.png", victim / "photo.png")
    before = snapshot(victim)
    inputs = lambda files: [files, None, "", "base", "", None, None, 0.5, 0.3, None]  # noqa: E731
    with served(tiny_sam3_dir, tmp_path) as app:
        [root] = [p for p in tmp_path.iterdir() if p.name.startswith("sam3_app_")]
        image = upload(app.local_url, REPO / "assets" / "demo_scratch.png")
        done = call(app.local_url, "run", inputs([image]), session_hash="../victim")
        assert done["success"] and "Done (Run 1): 1 image" in str(done["output"]["data"])
        [folder] = root.iterdir()  # the session's downloads: a folder the server named, inside its root
        assert sorted(p.name for p in folder.iterdir()) == ["demo_scratch_mask.png", "results.json"]
        stolen = call(app.local_url, "run", inputs([file_data(victim / "photo.png")]))
        assert not stolen["success"]  # gradio refuses a path that was not uploaded: nothing is read
        heartbeat_closed(app.server_port, "..")
        call(app.local_url, "run", inputs([image]), session_hash="served")
        assert len(list(root.iterdir())) == 2
        heartbeat_closed(app.server_port, "served")  # a tab the app served closes: its folder goes
        for _ in range(100):
            if len(list(root.iterdir())) == 1:
                break
            time.sleep(0.05)
        assert list(root.iterdir()) == [folder] and folder.is_dir()
        assert snapshot(victim) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, "victim"])


def test_upload_errors_name_the_file_once_with_a_hint_for_its_type(tmp_path):
    upload_dir = tmp_path / "gradio" / "0123abcd"  # where gradio keeps an upload: never shown to the user
    upload_dir.mkdir(parents=True)
    (upload_dir / "notes.txt").write_text("x")
    (upload_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (upload_dir / "README").write_text("x")
    with pytest.raises(DatasetError) as err:
        read_upload(upload_dir / "notes.txt")
    err_tail = ", not an image: upload .png, .jpg, .jpeg, .bmp, .tif, .tiff files"
    assert str(err.value) == f"notes.txt is a .txt file{err_tail}"
    with pytest.raises(DatasetError, match="^README is a file without extension, not an image"):
        read_upload(upload_dir / "README")
    with pytest.raises(DatasetError) as err:
        read_upload(upload_dir / "broken.png", "broken (2).png")
    message = str(err.value)
    assert (
        message.startswith("broken (2).png cannot be decoded as a PNG image")
        and "save it again as PNG" in message
    )
    assert str(tmp_path) not in message and message.count("broken") == 1
    images, errors = read_uploads([upload_dir / "notes.txt", EXAMPLES[0]])
    assert [n for n, _ in images] == ["demo_scratch.png"] and errors == [
        f"notes.txt is a .txt file{err_tail}"
    ]


def test_colour_bar_verdict_and_image_threshold(tmp_path):
    picture = np.zeros((200, 300, 3), np.uint8)
    barred = with_colour_bar(picture)
    assert barred.shape == (200, 350, 3) and np.array_equal(barred[:, :300], picture)
    top, bottom = barred[0, 310], barred[-1, 310]  # jet: score 1 is dark red at the top, 0 dark blue below
    assert top[0] > 100 and top[2] < 50 and bottom[2] > 100 and bottom[0] < 50
    assert score_line(0.7, 0.5) == "**image score 0.700 → ANOMALOUS** (threshold 0.500)"
    assert score_line(0.3, 0.5) == "**image score 0.300 → normal** (threshold 0.500)"
    assert "--thresholds" in score_line(0.3, None)
    path = tmp_path / "thresholds.json"
    entries = {"bottle": {"image_f1_threshold": 0.61}, "wood": {"image_f1_threshold": None}}
    path.write_text(json.dumps({"categories": entries}))
    assert image_threshold_from(path, "bottle") == 0.61 and image_threshold_from(path, "wood") is None


def test_categories_and_examples():
    names = category_choices()
    assert names[:2] == ["bottle", "cable"] and "pcb1" in names and len(names) == len(set(names))
    for name in DATASET_NAMES:  # every benchmark of the registry is in the list
        assert set(categories_of(name)) <= set(names), name
    assert all(p.is_file() and p.parent == REPO / "assets" for p in EXAMPLES)


def test_running_app_takes_mask_threshold_and_verdict_from_thresholds(tiny_sam3_dir, tmp_path):
    """--thresholds: a Run with a category of the file cuts at its pixel_normal_threshold and calls the image
    anomalous at its image_f1_threshold; a category missing from the file is an error in the status."""
    thresholds = tmp_path / "thresholds.json"
    entries = {"bottle": {"pixel_normal_threshold": 0.42, "image_f1_threshold": 0.01}}
    thresholds.write_text(json.dumps({"categories": entries}))
    with served(tiny_sam3_dir, tmp_path, "--thresholds", str(thresholds)) as app:
        image = upload(app.local_url, REPO / "assets" / "demo_hole.png")
        inputs = lambda category: [[image], None, category, "base", "", None, None, 0.5, 0.3, None]  # noqa: E731
        out = call(app.local_url, "run", inputs("bottle"))["output"]["data"]
        verdict, doc, status, mask_t = out[5], json.loads(out[6]), out[10], out[12]
        assert mask_t == 0.42 and doc["mask_threshold"] == 0.42 and doc["image_score"] >= 0.01
        assert verdict == f"**image score {doc['image_score']:.3f} → ANOMALOUS** (threshold 0.010)"
        assert status == "Done (Run 1): 1 image(s)."
        out = call(app.local_url, "run", inputs("wood"))["output"]["data"]
        assert out[10].startswith("**Error (Run 1):** --thresholds") and "has no category 'wood'" in out[10]
