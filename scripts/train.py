"""Fine-tune learned concept embeddings for SAM 3 on one dataset (SAM 3 itself stays frozen).

    python scripts/train.py --dataset mvtec --dataset_path ~/autodl-tmp/datasets --output_dir runs/mvtec
    python scripts/train.py --config configs/mvtec.yaml --output_dir runs/mvtec \
        --resume runs/mvtec/last.safetensors

Trains on the test split of every category of --dataset (images with masks), as in the cross-dataset
protocol of AnomalyCLIP / APRIL-GAN: train on MVTec AD, test zero-shot on VisA, and the reverse.
Writes epoch_NNN.safetensors and last.safetensors (trained tensors only), train_log.csv and loss_curve.png.
With --resume, the settings that define the trained tensors or the data must stay the same; the others (lr,
num_epochs, seed, ...) take their new values (see utils/training/trainer.py RESUME_FIXED / RESUME_CHANGEABLE).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from utils.config.cli import config_from_args, run, script_parser  # noqa: E402
from utils.files import OutputLock, check_output_dir  # noqa: E402
from utils.run_log import get_logger, log_to_folder  # noqa: E402
from utils.training.checkpoint import LAST_NAME, load_checkpoint  # noqa: E402
from utils.training.runner import train  # noqa: E402
from utils.training.trainer import resume_changes  # noqa: E402

log = get_logger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Config keys as flags (utils/config/schema.py declares which ones train.py takes), plus --resume."""
    parser = script_parser("train", __doc__.splitlines()[0])
    parser.add_argument("--resume", help="checkpoint (e.g. OUTPUT_DIR/last.safetensors) to continue from")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, not_config=("resume",))
    out = check_output_dir(cfg.evaluation.output_dir)  # before a 3 GB model is loaded
    with OutputLock(out):
        log_to_folder(out)
        ckpt = None
        if args.resume:
            ckpt = load_checkpoint(args.resume)
            # A changed fixed setting is refused before the model is loaded.
            resume_changes(ckpt["config"], cfg.to_dict())
            if ckpt["epoch"] >= cfg.training.num_epochs:
                done, wanted = ckpt["epoch"], cfg.training.num_epochs
                log.info(
                    f"training is already complete at epoch {done} (--num_epochs {wanted}): "
                    f"test with --checkpoint {Path(args.resume).expanduser()}"
                )
                return 0
        train(cfg, out, ckpt)
    log.info(f"done: test with --checkpoint {out / LAST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
