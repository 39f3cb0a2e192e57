"""Which copies of large arguments the backend must keep: the keys jobs share them under.

Runs in the parent. A backend copies each large argument once per key (into
shared memory, or to the cluster) and keeps the copy until told to let go of
that key. A job's key is its own id, unless its caller made it share one
with other jobs: joblib's backend sends each ``Parallel`` call's batches as
submits, whose jobs end whenever the workers run dry, and an array given to
every batch would otherwise be copied again for each of them. The ledger
says when a key is free: no live job uses it, and no caller holds it.

Callers' threads only ``hold`` and ``let_go`` (queued); the scheduler thread
does the rest. Imports nothing of corepool.
"""

from __future__ import annotations

import collections

__all__ = ["SharingLedger"]


class SharingLedger:
    """The keys of argument copies in use: by live jobs, or held by a caller across jobs."""

    def __init__(self) -> None:
        self._users: collections.Counter[int] = collections.Counter()
        self._held: set[int] = set()
        self._requests: collections.deque[tuple[int, bool]] = collections.deque()

    # -- callers' threads ------------------------------------------------------

    def hold(self, key: int) -> None:
        """Keep ``key``'s copies, even between its jobs, until ``let_go``."""
        self._requests.append((key, True))

    def let_go(self, key: int) -> None:
        """Stop holding ``key``: its copies go once its last job is over."""
        self._requests.append((key, False))

    # -- the scheduler thread --------------------------------------------------

    def apply_requests(self) -> list[int]:
        """Take in the callers' holds and releases; the keys now free."""
        freed = []
        while self._requests:
            key, hold = self._requests.popleft()
            if hold:
                self._held.add(key)
            else:
                self._held.discard(key)
                if not self._users[key]:  # a Counter: 0 for a key no job uses
                    freed.append(key)
        return freed

    def start(self, key: int) -> None:
        """A job that uses ``key`` was accepted."""
        self._users[key] += 1

    def end(self, key: int) -> bool:
        """A job that used ``key`` is over; whether the key is now free."""
        self._users[key] -= 1
        if self._users[key]:
            return False
        del self._users[key]
        return key not in self._held
