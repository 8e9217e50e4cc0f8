"""The evaluation harness of scripts/test.py with scoring stubs: ordering, resizing, alignment, resume."""

import json
import math
import shutil

import numpy as np
import pytest

from dataset import load_dataset
from utils.config.loading import StaleOutputError, resolve_config
from utils.evaluation import runner
from utils.evaluation.loop import prefetched_batches
from utils.evaluation.metrics import METRIC_KEYS
from utils.evaluation.runner import evaluate


def gt_scorer(samples, category, references=()):
    """A perfect detector: the ground-truth mask is the map, the label the score."""
    return [(s.mask.astype(np.float32), float(s.label)) for s in samples]


def constant_scorer(samples, category, references=()):
    return [(np.full(s.mask.shape, 0.5, np.float32), 0.5) for s in samples]


def _cfg(root, out, **kw):
    base = {"dataset": "mvtec", "dataset_path": str(root), "output_dir": str(out), "batch_size": 3}
    return resolve_config(None, {**base, **kw})


def test_ground_truth_maps_score_one_everywhere(datasets_root, tmp_path):
    per_category = evaluate(_cfg(datasets_root, tmp_path, eval_size=64), gt_scorer, progress=False)
    assert set(per_category) == {"bottle", "wood"}
    for metrics in per_category.values():
        assert metrics == {k: pytest.approx(1.0) for k in METRIC_KEYS}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["mean"] == {k: pytest.approx(1.0) for k in METRIC_KEYS}
    assert (tmp_path / "curves" / "bottle_roc.png").is_file() and (tmp_path / "results.md").is_file()


def test_resizing_to_eval_size_keeps_masks_aligned(datasets_root, tmp_path):
    """Maps at 64 px, evaluation at 32 px: bilinear maps vs nearest masks stay nearly perfect."""
    per_category = evaluate(_cfg(datasets_root, tmp_path, eval_size=32), gt_scorer, progress=False)
    for metrics in per_category.values():
        assert metrics["image_auroc"] == pytest.approx(1.0)
        assert metrics["pixel_auroc"] > 0.98
        assert metrics["pixel_aupro"] > 0.9


def test_misaligned_maps_are_caught(datasets_root, tmp_path):
    """Maps of the wrong image (shifted by one) must not score perfectly: proves ordering matters."""

    def shifted(samples, category, references=()):
        outs = gt_scorer(samples, category)
        return outs[1:] + outs[:1]

    per_category = evaluate(
        _cfg(datasets_root, tmp_path, eval_size=64, batch_size=7), shifted, progress=False
    )
    assert all(m["pixel_auroc"] < 0.9 for m in per_category.values())


def test_constant_maps_give_chance_auroc(datasets_root, tmp_path):
    per_category = evaluate(_cfg(datasets_root, tmp_path, eval_size=64), constant_scorer, progress=False)
    for metrics in per_category.values():
        assert metrics["image_auroc"] == pytest.approx(0.5)
        assert metrics["pixel_auroc"] == pytest.approx(0.5)


def test_interrupted_run_resumes_to_identical_results(datasets_root, tmp_path):
    fresh = evaluate(_cfg(datasets_root, tmp_path / "fresh", eval_size=32), gt_scorer, progress=False)
    calls = []

    def crashing(samples, category, references=()):
        calls.append([s.image_path for s in samples])
        if len(calls) == 3:  # bottle: batches 1, 2 stored; batch 3 in flight
            raise KeyboardInterrupt
        return gt_scorer(samples, category)

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(_cfg(datasets_root, out, eval_size=32), crashing, progress=False)
    progress = json.loads((out / "categories" / "bottle" / "progress.json").read_text())
    assert len(progress["scores"]) == 6  # two batches of 3 kept

    calls.clear()
    resumed = evaluate(_cfg(datasets_root, out, eval_size=32), gt_scorer_counting(calls), progress=False)
    bottle = load_dataset("mvtec", datasets_root, "bottle", "test")
    wood = load_dataset("mvtec", datasets_root, "wood", "test")
    assert calls[0][0] == bottle.records[6].image_path  # continues at the first image not stored
    assert sum(len(c) for c in calls) == (len(bottle) - 6) + len(wood)
    assert resumed == fresh
    # A third run scores nothing: every category is finished.
    calls.clear()
    assert (
        evaluate(_cfg(datasets_root, out, eval_size=32), gt_scorer_counting(calls), progress=False) == fresh
    )
    assert calls == []


def gt_scorer_counting(calls):
    def score(samples, category, references=()):
        calls.append([s.image_path for s in samples])
        return gt_scorer(samples, category)

    return score


def test_changed_config_refuses_to_mix_results(datasets_root, tmp_path):
    evaluate(_cfg(datasets_root, tmp_path, eval_size=32, categories=["bottle"]), gt_scorer, progress=False)
    with pytest.raises(StaleOutputError, match="different config"):
        evaluate(
            _cfg(datasets_root, tmp_path, eval_size=32, categories=["bottle"], sigma=1.0),
            gt_scorer,
            progress=False,
        )


def test_category_without_anomalies_reports_nan(tmp_path):
    """A category whose test set has only good images: undefined metrics are NaN/null, not 0.5."""
    from dataset.synthetic import make_mvtec_like

    root = make_mvtec_like(tmp_path / "data", categories=("bottle",), n_defect=2)
    shutil.rmtree(root / "bottle" / "ground_truth")
    for defect in ("scratch", "hole"):
        shutil.rmtree(root / "bottle" / "test" / defect)
    with pytest.warns(UserWarning):
        per_category = evaluate(_cfg(root, tmp_path / "out", eval_size=64), gt_scorer, progress=False)
    assert math.isnan(per_category["bottle"]["image_auroc"])
    assert json.loads((tmp_path / "out" / "results.json").read_text())["mean"]["image_auroc"] is None


def test_prefetched_batches_cover_every_sample_once_in_order():
    samples = list(range(10))  # any indexable sequence
    batches = [f if f is None else f.result() for f in prefetched_batches(samples, [3, None, 7], 4)]
    assert batches == [[3, 4, 5, 6], None, [7, 8, 9]]
    assert list(prefetched_batches(samples, [], 4)) == []


def test_fewshot_references_are_drawn_once_and_given_to_the_scorer(datasets_root, tmp_path, monkeypatch):
    """The runner draws each category's references once, records them and passes the same paths down."""
    draws, seen = [], {}
    real_draw = runner.draw_references
    monkeypatch.setattr(runner, "draw_references", lambda cfg, c: draws.append(c) or real_draw(cfg, c))

    def recording(samples, category, references=()):
        seen.setdefault(category, set()).add(tuple(references))
        return gt_scorer(samples, category)

    cfg = _cfg(datasets_root, tmp_path, eval_size=32, visual="fewshot", shots=1)
    evaluate(cfg, recording, progress=False)
    recorded = json.loads((tmp_path / "results.json").read_text())["visual"]["references"]
    assert sorted(draws) == sorted(recorded) == ["bottle", "wood"]
    assert seen == {c: {tuple(paths)} for c, paths in recorded.items()} and all(
        len(p) == 1 for p in recorded.values()
    )
