"""Leases kept alive: a live holder's claims renewed by a heartbeat, so work longer than the lease is not done twice.

A claim is offered again by other runs once it is older than the lease (``reclaim_after``). A holder that is still
working on it (a batch worker whose callable is slow, an instance queued behind others, a sensor whose drain or
read of fields is slow, a deferred sensor's trigger between its first claim and its event, a waiter of a round trip)
renews it every fraction of the lease (a third by default) through its claims
ledger: **one write of its record per beat, whatever the number of claims** (the group commit of the claims). A
holder that dies stops beating, so its claims come back one lease after its last beat, as before.

.. code-block:: python

    with LeaseKeeper(claims, reclaim_after, held=lambda: ids_still_being_worked_on):
        ...  # work longer than the lease

No Airflow in here: the worker, the sensor and the triggers use it alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger

log = logging.getLogger(__name__)

#: A heartbeat renews the claims every this fraction of the lease: two beats may be lost before a lease runs out.
RENEW_FRACTION = 1 / 3


def renew_interval(reclaim_after: dt.timedelta | float | None, fraction: float = RENEW_FRACTION) -> float | None:
    """Seconds between two beats for a lease (``None``: no lease, nothing to renew)."""
    if reclaim_after is None:
        return None
    seconds = reclaim_after.total_seconds() if isinstance(reclaim_after, dt.timedelta) else float(reclaim_after)
    if seconds <= 0:
        return None  # a lease of 0: every claim is due at once, renewing cannot keep it
    return seconds * fraction


class LeaseKeeper:
    """Renew a live holder's open claims every ``fraction`` of the lease, in a background thread.

    :param claims: the holder's claims ledger
    :param reclaim_after: the lease the claims are read with (``None`` or 0: nothing is renewed)
    :param held: the ids still being worked on, asked at each beat (``None``: every open claim of the record); a
        beat with nothing held writes nothing
    :param fraction: the share of the lease between two beats (default a third)
    """

    def __init__(
        self,
        claims: ClaimsLedger | None,
        reclaim_after: dt.timedelta | float | None,
        *,
        held: Callable[[], Iterable[Any]] | None = None,
        fraction: float = RENEW_FRACTION,
    ) -> None:
        self.claims = claims
        self.interval = renew_interval(reclaim_after, fraction) if claims is not None else None
        self.held = held
        #: beats that renewed at least one claim (each one store write)
        self.renewals = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        """Start beating (nothing happens without a lease)."""
        if self.interval is not None and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="workflowsoft-lease", daemon=True)
            self._thread.start()
        return self

    def stop(self, *, wait: bool = True) -> None:
        """Stop beating (the claims' leases then run out one lease after the last beat).

        ``wait=False`` does not wait for a beat in flight (an event loop must not block on a store write).
        """
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def beat(self) -> int:
        """Renew now; returns how many claims were renewed. Errors are logged, never raised (the next beat retries)."""
        if self.claims is None:
            return 0
        try:
            ids = None if self.held is None else list(self.held())
            if ids is not None and not ids:
                return 0
            renewed = self.claims.renew(ids)
        except Exception as exc:
            log.warning("Renewing the claims' lease failed (%s: %s); the next beat tries again", type(exc).__name__,
                        exc)
            return 0
        if renewed:
            self.renewals += 1
        return renewed

    def _beat(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["RENEW_FRACTION", "LeaseKeeper", "renew_interval"]
