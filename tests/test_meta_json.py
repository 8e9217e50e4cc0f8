"""`--dataset meta_json`: the meta.json of APRIL-GAN / AnomalyCLIP, written the way their generators write it.

The generators in this file follow AnomalyCLIP's generate_dataset_json scripts: MVTec-like sets with paths
relative to the folder and masks paired with images by sorted position (mvtec.py), VisA from its split csv
(visa.py), image-level medical sets with empty mask paths and no train items (brainmri.py), polyp sets with
absolute paths of the generating machine and masks paired by position (colonDB.py), DAGM's "Train"/"Test".
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import DatasetError, DatasetWarning, available_categories, categories_of, load_dataset, set_name
from dataset.constants import MEDICAL_CATEGORIES, object_noun
from dataset.meta_json import PathFinder, load_meta_json, stems_match
from model.prompts import BASE_DEFECTS, MEDICAL_BASE_DEFECTS, build_prompts, object_prompt
from scripts import test as test_script
from utils.config.cli import config_from_args, run
from utils.config.loading import resolve_config
from utils.evaluation.metrics import METRIC_KEYS, UndefinedMetricWarning

REPO = Path(__file__).resolve().parents[1]
FOREIGN = "/remote-home/someone/data/medical/CVC-ColonDB"  # where the peers' colonDB.py generator ran


def write_meta(folder: Path, info: dict) -> Path:
    (folder / "meta.json").write_text(json.dumps(info, indent=4) + "\n")
    return folder / "meta.json"


def mvtec_style_meta(root: Path) -> dict:
    """AnomalyCLIP's mvtec.py: `<cls>/<phase>/<specie>/<img>`, masks of a specie paired by sorted position."""
    info: dict = {"train": {}, "test": {}}
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for phase in ("train", "test"):
            items = []
            for specie in sorted(os.listdir(cls_dir / phase)):
                abnormal = specie != "good"
                images = sorted(os.listdir(cls_dir / phase / specie))
                masks = sorted(os.listdir(cls_dir / "ground_truth" / specie)) if abnormal else []
                for idx, name in enumerate(images):
                    mask = f"{cls_dir.name}/ground_truth/{specie}/{masks[idx]}" if abnormal else ""
                    items.append(
                        dict(
                            img_path=f"{cls_dir.name}/{phase}/{specie}/{name}",
                            mask_path=mask,
                            cls_name=cls_dir.name,
                            specie_name=specie,
                            anomaly=int(abnormal),
                        )
                    )
            info[phase][cls_dir.name] = items
    return info


def visa_style_meta(root: Path) -> dict:
    """AnomalyCLIP's visa.py: the rows of split_csv/1cls.csv in file order, specie_name ""."""
    info: dict = {"train": {}, "test": {}}
    with open(root / "split_csv" / "1cls.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            abnormal = row["label"] == "anomaly"
            item = dict(
                img_path=row["image"],
                mask_path=row["mask"] if abnormal else "",
                cls_name=row["object"],
                specie_name="",
                anomaly=int(abnormal),
            )
            info[row["split"]].setdefault(row["object"], []).append(item)
    return info


def _png(path: Path, seed: int, mask: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask:
        pixels = np.zeros((32, 32), np.uint8)
        pixels[8 + seed % 8 : 20 + seed % 8, 6:18] = 255
    else:
        pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def medical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with two peer-style classes: `colon` (ColonDB/Endo-like: absolute paths of the generating
    machine, masks `p<n>.png` paired by position, some normal images) and `brain` (BrainMRI-like: relative
    paths, image-level: mask_path "" for every item). No train items."""
    root = tmp_path_factory.mktemp("meta_sets") / "CVC-ColonDB"
    colon = []
    for i in range(3):
        _png(root / "images" / f"{i + 1}.png", i)
        _png(root / "masks" / f"p{i + 1}.png", i, mask=True)
        colon.append(
            dict(
                img_path=f"{FOREIGN}/images/{i + 1}.png",
                mask_path=f"{FOREIGN}/masks/p{i + 1}.png",
                cls_name="colon",
                specie_name="",
                anomaly=1,
            )
        )
    for i in range(2):
        _png(root / "good" / f"n{i}.png", 10 + i)
        colon.append(
            dict(
                img_path=f"{FOREIGN}/good/n{i}.png",
                mask_path="",
                cls_name="colon",
                specie_name="good",
                anomaly=0,
            )
        )
    brain = []
    for specie, n in (("no", 2), ("yes", 2)):
        for i in range(n):
            _png(root / "brain_tumor_dataset" / specie / f"{specie}{i}.png", 20 + i)
            brain.append(
                dict(
                    img_path=f"brain_tumor_dataset/{specie}/{specie}{i}.png",
                    cls_name="brain",
                    mask_path="",
                    specie_name=specie,
                    anomaly=int(specie == "yes"),
                )
            )
    write_meta(root, {"train": {}, "test": {"colon": colon, "brain": brain}})
    return root


# --- the same images give the same samples as the native loaders ---------------------------------------


def _same_samples(meta: object, native: object) -> None:
    assert meta.records == native.records
    for a, b in zip(meta, native, strict=True):
        assert (a.label, a.defect_type, a.image_path, a.mask_path) == (
            b.label,
            b.defect_type,
            b.image_path,
            b.mask_path,
        )
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_mvtec_meta_json_gives_the_samples_of_the_mvtec_loader(mvtec_root: Path, tmp_path: Path) -> None:
    root = shutil.copytree(mvtec_root, tmp_path / "mvtec")
    write_meta(root, mvtec_style_meta(root))
    found = available_categories("meta_json", root)
    assert found == available_categories("mvtec", root) == ["bottle", "wood"]
    for category in ("bottle", "wood"):
        for split in ("train", "test"):
            _same_samples(
                load_dataset("meta_json", root, category, split), load_dataset("mvtec", root, category, split)
            )


def test_visa_meta_json_gives_the_samples_of_the_visa_loader(visa_root: Path, tmp_path: Path) -> None:
    root = shutil.copytree(visa_root, tmp_path / "visa")
    write_meta(root, visa_style_meta(root))
    assert available_categories("meta_json", root / "meta.json") == ["candle", "pcb1"]
    for category in ("candle", "pcb1"):
        for split in ("train", "test"):
            meta = load_dataset("meta_json", root, category, split)
            native = load_dataset("visa", root, category, split)
            # the VisA loader sorts by label then name; meta.json keeps the csv's order
            meta.records.sort(key=lambda r: (r.label, os.path.basename(r.image_path)))
            _same_samples(meta, native)


# --- paths, masks and errors --------------------------------------------------------------------------


def test_paths_relative_foreign_absolute_and_inside(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(b"x")
    finder = PathFinder(tmp_path)
    expected = tmp_path / "images" / "1.png"
    assert finder.find("images/1.png", "w", "img_path") == expected
    assert finder.find(f"{FOREIGN}/images/1.png", "w", "img_path") == expected  # longest tail that exists
    assert finder.dropped == [tuple(FOREIGN.strip("/").split("/"))]  # tried first for the next path
    assert finder.find(str(expected), "w", "img_path") == expected  # absolute inside the folder
    assert finder.find("C:\\data\\CVC\\images\\1.png", "w", "img_path") == expected
    assert finder.find("images/2.png", "w", "img_path") is None
    with pytest.raises(DatasetError, match="leaves the folder of meta.json"):
        finder.find("../outside/images/1.png", "w", "img_path")


def test_a_missing_file_names_its_entry(medical: Path, tmp_path: Path) -> None:
    info = json.loads((medical / "meta.json").read_text())
    info["test"]["colon"][2]["mask_path"] = f"{FOREIGN}/masks/gone.png"
    root = shutil.copytree(medical, tmp_path / "copy")
    write_meta(root, info)
    with pytest.raises(
        DatasetError,
        match=r"meta.json: test/colon\[2\]: mask_path '/remote-home/.*gone.png' "
        r"not found under .*copy \(neither as written nor by a tail",
    ):
        load_dataset("meta_json", root, "colon", "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a JSON file"),
        ('{"train": {}}', "has no 'test' section"),
        ('{"test": {"c": [{"img_path": "a.png", "anomaly": 2}]}}', r"c\[0\]: anomaly 2; expected 0 or 1"),
        ('{"test": {"c": [{"mask_path": ""}]}}', r"test/c\[0\] is not an item with img_path and anomaly"),
        ('{"test": {"../c": []}}', "class '../c' is not a plain name"),
        (
            '{"test": {"c": [{"img_path": "a.png", "anomaly": 1, "specie_name": "../x"}]}}',
            r"c\[0\]: specie_name '../x' is not a plain name",
        ),
    ],
)
def test_a_bad_meta_json_is_a_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "meta.json").write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        available_categories("meta_json", tmp_path)
    assert "\n" not in str(err.value)


def test_no_meta_json_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no meta.json at .*: pass --dataset_path the folder holding"):
        available_categories("meta_json", tmp_path)


def test_masks_paired_by_position_warn_naming_both_and_stay_paired(medical: Path) -> None:
    with pytest.warns(
        DatasetWarning,
        match=r"3 mask\(s\) of test/colon are not named after their image "
        r"\(1.png <-> p1.png, 2.png <-> p2.png, 3.png <-> p3.png",
    ):
        data = load_dataset("meta_json", medical, "colon", "test")
    assert [Path(r.mask_path).name for r in data.records if r.label] == ["p1.png", "p2.png", "p3.png"]
    assert [r.defect_type for r in data.records] == ["bad"] * 3 + ["good"] * 2
    assert stems_match("a/000.png", "b/000_mask.png") and stems_match("ISIC_1.jpg", "ISIC_1_Segmentation.png")
    assert not stems_match("1.png", "10.png") and not stems_match("1.png", "p1.png")


def test_image_level_class_has_no_masks_and_no_train(medical: Path) -> None:
    data = load_dataset("meta_json", medical, "brain", "test")
    assert [(r.label, r.defect_type, r.mask_path) for r in data.records] == [(0, "good", None)] * 2 + [
        (1, "yes", None)
    ] * 2
    assert not data[3].mask.any()
    with pytest.raises(DatasetError, match="class 'brain' has no normal train items, so no few-shot"):
        load_meta_json(medical, "brain", "train")
    cfg = resolve_config(
        None, {"dataset": "meta_json", "dataset_path": str(medical), "visual": "fewshot", "shots": 1}
    )
    from utils.evaluation.references import draw_references

    with pytest.raises(DatasetError, match="class 'brain' has no normal train items"):
        draw_references(cfg, "brain")


def test_dagm_capitalised_splits_and_repeats(tmp_path: Path) -> None:
    for name in ("0001.PNG", "0002.PNG"):
        _png(tmp_path / "Class1" / "Train" / name, 0)
    item = dict(img_path="Class1/Train/0001.PNG", mask_path="", cls_name="Class1", specie_name="", anomaly=0)
    other = {**item, "img_path": "Class1/Train/0002.PNG"}
    write_meta(tmp_path, {"Train": {"Class1": [item, other]}, "Test": {"Class1": [item, other, item]}})
    assert available_categories("meta_json", tmp_path) == ["Class1"]
    with pytest.warns(DatasetWarning, match=r"1 item\(s\) of test/Class1 repeat an image listed before"):
        assert len(load_dataset("meta_json", tmp_path, "Class1", "test")) == 2
    assert len(load_dataset("meta_json", tmp_path, "Class1", "train")) == 2


# --- test.py end to end, compare.md, test.sh ----------------------------------------------------------


def test_test_py_scores_every_class_image_metrics_for_all_pixel_metrics_where_masks_exist(
    medical: Path, tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results" / "text" / set_name("meta_json", medical)
    argv = [
        "--config",
        str(REPO / "configs" / "meta_json.yaml"),
        "--dataset_path",
        str(medical),
        "--model_path",
        str(tiny_sam3_dir),
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--eval_size",
        "24",
        "--output_dir",
        str(out),
        "--visual",
        "none",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(test_script.main, test_script.parse_args, argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["categories"]) == ["brain", "colon"] and doc["dataset"] == "meta_json"
    assert doc["set"] == "CVC-ColonDB" == out.name  # named as its output folder is
    heading = (out / "results.md").read_text().splitlines()[0]
    assert (
        heading.startswith("### CVC-ColonDB · text · prompts base · ") and " in 2 categories (%)" in heading
    )
    for cls in ("brain", "colon"):
        assert 0.0 <= doc["categories"][cls]["image_auroc"] <= 1.0
    pixel = ("pixel_auroc", "pixel_ap", "pixel_aupro")
    assert all(doc["categories"]["brain"][k] is None for k in pixel)
    assert all(0.0 <= doc["categories"]["colon"][k] <= 1.0 for k in pixel)
    undefined = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    assert any("pixel_auroc" in m and "no anomalous pixels" in m for m in undefined)
    assert doc["config"]["prompt_strategy"] == "base"

    from utils.evaluation.compare import main as compare

    assert compare(str(tmp_path / "results")) == 0
    table = (tmp_path / "results" / "compare.md").read_text()
    assert "### CVC-ColonDB: mode comparison (%)" in table and "| text | CVC-ColonDB | 1 |" in table


def test_every_table_of_a_visual_run_names_the_set_by_its_folder(tmp_path: Path) -> None:
    from utils.evaluation.compare import collect_signals, signal_table
    from utils.evaluation.results import write_results

    metrics = dict.fromkeys(METRIC_KEYS, 0.5)
    out = tmp_path / "mutual" / "ISIC"
    out.mkdir(parents=True)
    config = {"dataset_path": "/data/ISIC", "visual": "mutual", "visual_weight": 1.0}
    signals = {"skin": {"text": metrics, "visual": metrics}}
    doc = write_results(out, "meta_json", {"skin": metrics}, config, signals=signals)
    assert doc["dataset"] == "meta_json" and doc["set"] == "ISIC"
    assert [line for line in (out / "results.md").read_text().splitlines() if line.startswith("###")] == [
        "### ISIC · mutual (%)",
        "### ISIC: fused map, visual map alone, text map alone (%)",
    ]
    assert signal_table(collect_signals(tmp_path)).startswith("### ISIC: fused map")
    assert "set" not in write_results(tmp_path, "mvtec", {"skin": metrics}, {"dataset_path": "/data"})


def test_default_output_folder_is_named_after_the_meta_json_folder(medical: Path) -> None:
    args = test_script.parse_args(
        ["--config", str(REPO / "configs" / "meta_json.yaml"), "--dataset_path", str(medical / "meta.json")]
    )
    assert Path(config_from_args(args, output_per_dataset=True).evaluation.output_dir).name == "CVC-ColonDB"
    assert set_name("meta_json", "/data/mvtec") == "mvtec_meta_json" and set_name("mvtec", "/x") == "mvtec"
    cfg = resolve_config(str(REPO / "configs" / "meta_json.yaml"), {})
    assert cfg.data.dataset == "meta_json" and cfg.data.categories is None  # every class of the file


def test_test_sh_runs_each_meta_json_folder_into_its_own_folder(tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    python.chmod(0o755)
    env = {
        **os.environ,
        "PYTHON": str(python),
        "DATASETS": "meta_json",
        "OUTPUT_ROOT": "out",
        "META_JSON_DIRS": "/data/CVC-ColonDB /data/ISIC/meta.json /data/mvtec/",
    }
    proc = subprocess.run(["bash", REPO / "test.sh"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [c for c in log.read_text().splitlines() if "utils.evaluation.modes" not in c]
    flags = [dict(zip(c.split()[1::2], c.split()[2::2], strict=False)) for c in calls[:3]]  # flag -> value
    assert [f["--output_dir"] for f in flags] == [
        "out/text/CVC-ColonDB",
        "out/text/ISIC",
        "out/text/mvtec_meta_json",
    ]
    assert [f["--dataset_path"] for f in flags] == [
        "/data/CVC-ColonDB",
        "/data/ISIC/meta.json",
        "/data/mvtec/",
    ]
    assert calls[3] == "-m utils.evaluation.compare out"
    env.pop("META_JSON_DIRS")
    env.pop("DATASET_PATH", None)
    proc = subprocess.run(["bash", REPO / "test.sh"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs META_JSON_DIRS" in proc.stderr


# --- prompts and nouns of the new classes -------------------------------------------------------------


def test_medical_classes_get_the_medical_base_and_surfaces_no_object_prior() -> None:
    for cls in MEDICAL_CATEGORIES:
        assert build_prompts(cls, "base") == list(MEDICAL_BASE_DEFECTS)
        assert build_prompts(cls, "mixed")[: len(MEDICAL_BASE_DEFECTS)] == list(MEDICAL_BASE_DEFECTS)
    assert build_prompts("bottle", "base") == list(BASE_DEFECTS) == build_prompts("Woven_001", "base")
    assert "polyp on the colon" in build_prompts("colon", "contextual")
    assert object_noun("Woven_104") == "woven texture" and object_prompt("Woven_104") is None
    assert object_prompt("colon") is None and object_prompt("brain") == "brain"
    assert object_prompt("headct") == "brain" and object_noun("isic") == "skin"  # AdaCLIP's class names
    assert object_prompt("Class3") is None and object_noun("electrical commutators").startswith("electrical")


def test_demo_and_app_accept_the_new_categories() -> None:
    from scripts.demo import check_category
    from utils.app.texts import category_choices

    new = ("colon", "skin", "brain", "thyroid", "chest", "Woven_001", "Class10", "electrical commutators")
    for cls in new:
        check_category("meta_json", cls)
        assert cls in categories_of("meta_json") and cls in category_choices()


def test_demo_takes_a_class_of_the_users_own_set_with_the_base_prompts(
    tiny_sam3_dir: Path, tmp_path: Path
) -> None:
    """A meta.json's (and a folder's) classes are whatever its file says: demo takes any name, scores it with
    the base words and no object prior (as the app does: `prompts_for`); a known class keeps its own;
    benchmarks still refuse."""
    from scripts import demo
    from scripts.demo import check_category
    from utils.pipeline import prompts_for

    for name in ("meta_json", "folder"):
        check_category(name, "my_polyps")
    with pytest.raises(DatasetError, match="--category my_polyps is not a mvtec category: choose one of"):
        check_category("mvtec", "my_polyps")
    image = tmp_path / "case.png"
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(image)
    argv = ["--image_path", str(image), "--model_path", str(tiny_sam3_dir), "--device", "cpu"]
    argv += ["--dataset", "meta_json", "--category", "my_polyps", "--output_dir", str(tmp_path / "out")]
    assert run(demo.main, demo.parse_args, argv) == 0
    record = json.loads((tmp_path / "out" / "case.json").read_text())
    assert record["prompts"] == list(BASE_DEFECTS) and record["object_prompt"] is None
    cfg = resolve_config(None, {"dataset": "meta_json"})
    assert prompts_for(cfg, "brain_mri") == (list(MEDICAL_BASE_DEFECTS), "brain")  # a known class: its own
