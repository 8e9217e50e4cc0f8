"""Fixtures that generate synthetic datasets on disk (session-scoped: build once, never modify them).

    datasets_root/            what users pass as --dataset_path
        mvtec/{bottle,wood}/  3 train, 3 good + 4 defective test (2 scratch, 2 hole), 64x64 PNG, 8-bit masks
        visa/                 raw VisA layout, candle + pcb1: 3 train, 3 normal + 3 anomalous test, 48x64 JPEG
    folder_root/widget/       own-data layout: 3 good + 4 defective (scratch, stain) with masks

Tests that need a broken or altered tree must build their own in `tmp_path` with `dataset.synthetic`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset.synthetic import make_folder_like, make_mvtec_like, make_visa_like

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datasets root holding `mvtec/` (bottle, wood) and `visa/` (candle, pcb1, raw layout)."""
    root = tmp_path_factory.mktemp("datasets")
    make_mvtec_like(
        root / "mvtec",
        categories=("bottle", "wood"),
        n_train=3,
        n_good=3,
        n_defect=4,
        size=64,
        seed=0,
        defect_types=("scratch", "hole"),
    )
    make_visa_like(
        root / "visa",
        categories=("candle", "pcb1"),
        n_normal=3,
        n_anomaly=3,
        size=(48, 64),
        seed=0,
        n_train=3,
    )
    return root


@pytest.fixture(scope="session")
def mvtec_root(datasets_root: Path) -> Path:
    """The generated `mvtec/` folder (categories bottle, wood); its parent is `datasets_root`."""
    return datasets_root / "mvtec"


@pytest.fixture(scope="session")
def visa_root(datasets_root: Path) -> Path:
    """The generated raw VisA folder (`split_csv/1cls.csv`, candle, pcb1); its parent is `datasets_root`."""
    return datasets_root / "visa"


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Own-data layout: `widget/{good,scratch,stain,masks/<defect>}` with 3 good and 4 defective images."""
    root = tmp_path_factory.mktemp("own_data")
    return make_folder_like(
        root, categories=("widget",), n_good=3, n_defect=4, size=64, seed=0, defect_types=("scratch", "stain")
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real-format samples); the test is skipped when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def visa_tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """A raw VisA tree (candle: 1 train, 2 normal + 2 anomalous test) and its split file's lines."""
    root = make_visa_like(
        tmp_path / "visa", categories=("candle",), n_normal=2, n_anomaly=2, size=32, n_train=1
    )
    return root, (root / "split_csv" / "1cls.csv").read_text().splitlines()


def write_split(root: Path, lines: list[str], encoding: str = "utf-8") -> None:
    (root / "split_csv" / "1cls.csv").write_text("\n".join(lines) + "\n", encoding=encoding)
