"""Take work from a queue in batches: the one helper the batching threads share.

A thread that flushes many writes at once (``commit.GroupCommitter``, the cache's
``cache.CacheWriter``) blocks for the first item, then takes everything already
waiting: the batch grows with the load and costs nothing when it is light.
"""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def next_batch(waiting: queue.SimpleQueue[T | None], most: int) -> tuple[list[T], bool]:
    """Every item waiting (up to ``most``), blocking for the first; and whether a ``None``
    (asking the thread to stop after these) came with them."""
    first = waiting.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < most:
        try:
            more = waiting.get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False
