"""Several processes, one evaluation: torch.distributed as launched by ``torchrun`` (nothing home-made).

``torchrun --nproc_per_node=K scripts/test.py ...`` starts K processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment. Each rank loads the model once on its own device (``cuda:LOCAL_RANK``, or
the CPU with the gloo backend) and scores a disjoint, deterministic share of every category: the batches still
to score are dealt round-robin (round r: rank k takes batch r * K + k), so the batches themselves are exactly
those of a one-process run. After each round the ranks exchange their outputs and rank 0, the only writer,
appends them to the category's store in batch order: the store, and therefore resume with the same or another
K, is the one of a single process, and the results are identical to it.

Errors: every exchange carries each rank's status, so a failure on any rank (an exception, CUDA out of memory)
ends every rank with that rank's one-line message instead of leaving the others waiting in a collective.
Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here touches torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

T = TypeVar("T")


class RankError(RuntimeError):
    """Another rank (or this one) failed; the message is that rank's one-line error."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: rank in [0, world_size), local_rank = its GPU index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_environment(device: str, timeout_minutes: float = 30.0) -> tuple[Dist, str]:
    """The group described by torchrun's environment, initialised, and the device this rank should use.

    Args:
        device: the configured device (auto | cpu | cuda | cuda:N). Under torchrun, ``auto``/``cuda`` become
            ``cuda:LOCAL_RANK`` (nccl for CUDA tensors, gloo for the CPU: the Python objects the ranks
            exchange then travel through CPU memory, as torch picks the CPU backend for object collectives
            when the group has one; with nccl alone every pickle, a whole category's patch features in
            mutual mode, would be staged world_size times on each GPU); ``cpu`` (or no CUDA) uses gloo.
        timeout_minutes: how long a collective may wait for a slow rank before failing.

    Returns:
        (Dist, device string). Without torchrun: (SINGLE, device) and no process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
        device = f"cuda:{dist.local_rank}"
    if not tdist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if use_cuda else "gloo"
        tdist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return dist, device


def shutdown(dist: Dist) -> None:
    """Leave the process group (no-op without one)."""
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def error_message(err: BaseException) -> str:
    """One line for an exception: out-of-memory says what to lower."""
    if isinstance(err, torch.OutOfMemoryError):
        return "ran out of GPU memory: lower --batch_size or --chunk_size"
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _run(dist: Dist, work: Callable[[], T]) -> tuple[bool, Any]:
    """(True, result) or, under a group, (False, one-line message) when `work` raised."""
    try:
        return True, work()
    except Exception as err:  # noqa: BLE001 - every failure must reach the other ranks
        if not dist.enabled:
            raise
        return False, error_message(err)


def _raise_first_failure(dist: Dist, statuses: list[tuple[bool, Any]]) -> None:
    for rank, (ok, value) in enumerate(statuses):
        if not ok:
            raise RankError(f"rank {rank} of {dist.world_size} failed: {value}")


def everywhere(dist: Dist, work: Callable[[], T]) -> T:
    """Run `work` on this rank and return its result; only the ranks' success flags are exchanged.

    Use it around steps that may fail on one rank only (loading the model on a GPU, opening a store).

    Raises:
        RankError: `work` raised on some rank; every rank raises, with the lowest failing rank's message.
    """
    ok, value = _run(dist, work)
    if dist.enabled:
        statuses: list[Any] = [None] * dist.world_size
        tdist.all_gather_object(statuses, (ok, None if ok else value))
        _raise_first_failure(dist, statuses)
    return value


def on_main(dist: Dist, work: Callable[[], T]) -> T | None:
    """Run `work` on rank 0 only (None elsewhere); every rank learns whether it failed (see `everywhere`)."""
    return everywhere(dist, work if dist.is_main else lambda: None)


def gather(dist: Dist, work: Callable[[], T]) -> list[T]:
    """Run `work` on this rank and return every rank's result, in rank order (the same list on every rank).

    The results travel between processes (pickled): keep them to maps, masks and scores.

    Raises:
        RankError: `work` raised on some rank; every rank raises, with the lowest failing rank's message.
    """
    payload = _run(dist, work)
    if not dist.enabled:
        return [payload[1]]
    everyone: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(everyone, payload)
    _raise_first_failure(dist, everyone)
    return [value for _, value in everyone]


def broadcast(dist: Dist, value: T) -> T:
    """Rank 0's `value` on every rank (the value itself without a group)."""
    if not dist.enabled:
        return value
    box = [value if dist.is_main else None]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def round_robin(n_batches: int, dist: Dist) -> list[list[int | None]]:
    """Batch indices per round: round r gives rank k batch r * K + k, or None when the batches ran out.

    Example: 5 batches, K = 2 -> [[0, 1], [2, 3], [4, None]].
    """
    k = dist.world_size
    return [
        [b if b < n_batches else None for b in range(start, start + k)] for start in range(0, n_batches, k)
    ]
