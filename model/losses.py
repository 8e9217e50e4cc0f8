"""Training losses between predicted anomaly maps / image scores and the ground truth (pure functions)."""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6


def focal_loss(prob: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Mean binary focal loss (Lin et al. 2017) on probabilities.

    Args:
        prob: (N, H, W) predicted anomaly probability in [0, 1].
        target: (N, H, W) ground truth, 0/1 (bool or float).
        gamma: focusing exponent (0 gives alpha-weighted cross-entropy).
        alpha: weight of the positive (anomalous) class; 1 - alpha for normal pixels.
    Returns:
        scalar: mean over pixels of -a_t (1 - p_t)^gamma log p_t.
    """
    target = target.float()
    prob = prob.clamp(EPS, 1 - EPS)
    p_t = torch.where(target > 0.5, prob, 1 - prob)
    a_t = torch.where(target > 0.5, torch.full_like(prob, alpha), torch.full_like(prob, 1 - alpha))
    return (-a_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()


def dice_loss(prob: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Mean soft Dice loss over images: 1 - (2 |P∩G| + s) / (|P| + |G| + s).

    Args:
        prob, target: (N, H, W). The smoothing term s makes a good image (empty G) predicted empty score 0.
    Returns:
        scalar in [0, 1].
    """
    target = target.float()
    inter = (prob * target).flatten(1).sum(1)
    total = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def image_loss(score: Tensor, label: Tensor) -> Tensor:
    """Binary cross-entropy between image scores (N,) in [0, 1] and labels (N,) 0/1."""
    return torch.nn.functional.binary_cross_entropy(score.clamp(EPS, 1 - EPS), label.float())
