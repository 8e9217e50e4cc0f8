"""Images/s of scripts/test.py with K = 1 and K = 2 processes under torchrun (gloo, CPU, tiny SAM 3).

    python benchmarks/bench_distributed.py [--images 48 --size 256 --batch_size 4 --eval_size 256 --ranks 1,2]

Writes a synthetic MVTec-layout dataset (one category) and a tiny random SAM 3 into a temporary folder, runs
test.py once per K into a fresh output folder (each rank with OMP_NUM_THREADS = cores / K), and prints the
scoring speed results.json records (images/s, decoding + model + resizing) and the wall time of the whole
command (start-up and model loading included). Also prints the bytes a rank sends per image to rank 0 (the
pickled float16 map and bool mask at eval_size, as utils/evaluation/loop.py sends them).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from dataset.records import Sample  # noqa: E402
from model.tiny_sam3 import build_tiny_sam3  # noqa: E402
from utils.evaluation.loop import prepare_batch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48, help="test images of the category (half defective)")
    p.add_argument("--size", type=int, default=256, help="side of the synthetic images")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--eval_size", type=int, default=256)
    p.add_argument("--ranks", default="1,2", help="process counts to compare")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gathered_bytes_per_image(eval_size: int) -> int:
    """Pickled size of one image's payload (float16 map, bool mask, label, score) as a rank sends it."""
    image = np.zeros((eval_size, eval_size, 3), dtype=np.uint8)
    mask = np.zeros((eval_size, eval_size), dtype=bool)
    sample = Sample(image=image, label=1, mask=mask, category="c", defect_type="d", image_path="x.png")
    batch = [sample] * 4
    outputs = [(np.random.default_rng(0).random((64, 64), dtype=np.float32), 0.5)] * 4
    return len(pickle.dumps(prepare_batch(batch, outputs, (eval_size, eval_size)))) // 4


def run(k: int, args: argparse.Namespace, root: Path, model: Path, out: Path) -> tuple[float, float]:
    """(images/s from results.json, wall seconds of the command) for one run with k processes."""
    flags = ["--dataset", "mvtec", "--dataset_path", str(root), "--model_path", str(model), "--device", "cpu"]
    flags += ["--dtype", "fp32", "--batch_size", str(args.batch_size), "--eval_size", str(args.eval_size)]
    flags += ["--output_dir", str(out)]
    script = str(REPO_ROOT / "scripts" / "test.py")
    if k == 1:
        command = [sys.executable, script, *flags]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(k)]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), script, *flags]
    threads = max(1, (os.cpu_count() or 1) // k)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"K={k} failed:\n{proc.stderr[-3000:]}")
    entry = next(iter(json.loads((out / "results.json").read_text())["run"]["categories"].values()))
    return float(entry["images_per_s"]), wall


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp())
    n_defect = args.images // 2
    subprocess.run(
        [sys.executable, "-m", "dataset.synthetic", "--layout", "mvtec", "--out", str(tmp / "data"),
         "--categories", "bottle", "--n_good", str(args.images - n_defect), "--n_defect", str(n_defect),
         "--size", str(args.size)],
        cwd=REPO_ROOT, check=True, capture_output=True,
    )  # fmt: skip
    model = build_tiny_sam3(tmp / "tiny", seed=0)
    print(f"{args.images} images of {args.size}px, batch {args.batch_size}, eval_size {args.eval_size}, "
          f"{os.cpu_count()} cores")  # fmt: skip
    base = None
    for k in (int(v) for v in args.ranks.split(",")):
        speed, wall = run(k, args, tmp / "data", model, tmp / f"out_k{k}")
        base = base or speed
        print(f"  K={k}: {speed:6.2f} images/s scoring ({speed / base:.2f}x), {wall:5.1f} s for the command")
    print(f"gathered per image: {gathered_bytes_per_image(args.eval_size)} bytes (float16 map + bool mask)")


if __name__ == "__main__":
    main(parse_args())
