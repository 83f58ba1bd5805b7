"""A bounded ring of the latest items and the live followers of new ones: a model's
llama-server lines (``children/logs.py``) and the activity log (``telemetry/activity.py``).

Each follower has a bounded queue: one that falls behind misses items rather than growing
memory. Appending costs one deque append while nobody follows."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FollowedRing(Generic[Item]):
    """The last ``size`` items (0: none kept, followers still get them); each follower may
    fall ``backlog`` items behind."""

    def __init__(self, size: int, backlog: int) -> None:
        self._items: deque[Item] = deque(maxlen=max(0, size))
        self._backlog = backlog
        self._followers: set[asyncio.Queue[Item]] = set()

    def append(self, item: Item) -> None:
        self._items.append(item)
        for queue in self._followers:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled follower misses some
                queue.put_nowait(item)

    def recent(self, count: int) -> list[Item]:
        """The last ``count`` items, oldest first."""
        if count <= 0:
            return []
        return list(self._items)[-count:]

    @contextlib.contextmanager
    def follow(self) -> Iterator[asyncio.Queue[Item]]:
        """A queue that gets every item appended from now on, while the block runs."""
        queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=self._backlog)
        self._followers.add(queue)
        try:
            yield queue
        finally:
            self._followers.discard(queue)
