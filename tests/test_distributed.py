"""utils/distributed.py: the round-robin plan, and exchange/errors across two real gloo processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch.multiprocessing as mp

from utils.distributed import SINGLE, Dist, RankError, broadcast, everywhere, gather, round_robin


def test_round_robin_deals_every_batch_once_in_order():
    plan = round_robin(5, Dist(rank=0, world_size=2))
    assert plan == [[0, 1], [2, 3], [4, None]]
    flat = [b for rnd in round_robin(7, Dist(rank=0, world_size=3)) for b in rnd if b is not None]
    assert flat == list(range(7))
    assert round_robin(3, SINGLE) == [[0], [1], [2]]
    assert round_robin(0, Dist(rank=0, world_size=2)) == []


def test_single_process_helpers_are_plain_calls():
    assert gather(SINGLE, lambda: 7) == [7]
    assert everywhere(SINGLE, lambda: "x") == "x"
    assert broadcast(SINGLE, [1]) == [1]
    with pytest.raises(ZeroDivisionError):  # no group: the exception itself, not a RankError
        gather(SINGLE, lambda: 1 / 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    dist = Dist(rank=rank, world_size=world)
    out: dict = {"gathered": gather(dist, lambda: {"rank": rank, "square": rank * rank})}
    out["broadcast"] = broadcast(dist, f"from {rank}")

    def fail_on_one() -> int:
        if rank == 1:
            raise ValueError("image 3 is corrupt\nsecond line")
        return rank

    for name, step in (("gather_error", gather), ("everywhere_error", everywhere)):
        try:
            step(dist, fail_on_one)
            out[name] = None
        except RankError as err:
            out[name] = str(err)
    results[rank] = out
    tdist.destroy_process_group()


def test_two_gloo_ranks_exchange_and_fail_together():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        got = results[rank]
        assert got["gathered"] == [{"rank": 0, "square": 0}, {"rank": 1, "square": 1}]
        assert got["broadcast"] == "from 0"
        for name in ("gather_error", "everywhere_error"):  # both ranks stop, with rank 1's first line
            assert got[name] == "rank 1 of 2 failed: image 3 is corrupt"


def test_error_message_is_one_line_and_names_out_of_memory():
    import torch

    from utils.distributed import error_message

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")
    assert error_message(oom) == "ran out of GPU memory: lower --batch_size or --chunk_size"
    assert error_message(ValueError("first line\nsecond")) == "first line"
    assert error_message(KeyError()) == "KeyError"
