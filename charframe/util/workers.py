"""Run per-module tensor work on all cores without OpenMP thread contention.

A LoRA file is hundreds of small, independent QR/SVD/scale jobs. Splitting each small call across
cores (torch's default intra-op threads) gains little and collapses when other processes share the
CPU: OpenMP workers spin-wait for each other, and a 1 ms reduction can take 100 ms on a busy 2-core
machine. So module jobs run side by side in a thread pool, each with single-threaded torch.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_modules(fn: Callable[[T], R], items: Sequence[T], desc: str, progress: bool) -> list[R]:
    """fn over items, one single-threaded torch worker per core; results in input order."""
    from tqdm import tqdm

    workers = max(1, min(os.cpu_count() or 1, torch.get_num_threads(), len(items)))
    with torch_threads(1), tqdm(total=len(items), desc=desc, unit="module", disable=not progress) as bar:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for _ in as_completed(futures):
                bar.update(1)
            return [f.result() for f in futures]
