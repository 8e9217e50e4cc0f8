"""Line plots written as PNG files, for utils/evaluation/ and utils/training/ alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen on GPU boxes
import matplotlib.pyplot as plt  # noqa: E402


def save_loss_curve(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Plot the per-epoch mean of each loss term (keys "loss", "focal", "dice", "image") against "epoch"."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [row["epoch"] for row in history]
    for key in ("loss", "focal", "dice", "image"):
        ax.plot(epochs, [row[key] for row in history], marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="mean loss", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
