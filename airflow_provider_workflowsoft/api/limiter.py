"""The pace of one client: a rate limiter that learns the tenant's rate from 429 answers; no Airflow, no I/O.

One :class:`RateLimiter` belongs to one client (sync or async) and is shared by every thread that sends through it:
all workers and pollers of a batch worker, for example. It never sleeps itself: :class:`~.protocol.Attempts` asks it
for a send time and the transport waits (``time.sleep`` or ``asyncio.sleep``), so both clients follow the same rules.

How it paces (additive increase, multiplicative decrease):

* **Unpaced** until told otherwise: without ``max_requests_per_second`` and before any 429, a request asks nothing
  but two attribute reads; the client is exactly as fast as without a limiter.
* **A known limit** (``max_requests_per_second``): requests are spaced ``1 / rate`` apart, whatever the number of
  threads.
* **On a 429**: every thread pauses until the answer's ``Retry-After`` (or the retry policy's backoff) has passed, one
  shared pause, not a backoff per thread; the rate is cut to ``decrease`` x the rate the server admitted since the
  previous cut (the last moment its allowance was known to be used up: over that span a token bucket admits exactly
  its rate), measured over at least ``window`` and at most ``MAX_SPAN`` seconds, or x the current pace if that is
  lower. Only the first 429 of an episode cuts: answers to requests sent before the cut do not cut again.
* **Then it probes upward**: the pace grows by ``increase`` x the cut rate every second without a 429 (never above
  ``max_requests_per_second``), until the next 429 shows where the tenant's limit is.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from airflow_provider_workflowsoft.api.errors import WorkflowsoftConfigError

#: Fraction of the admitted rate kept after a 429 (the multiplicative decrease).
DEFAULT_DECREASE = 0.85
#: Growth per second without a 429, as a fraction of the rate set at the last cut (the additive increase).
DEFAULT_INCREASE = 0.05
#: The shortest span (seconds) over which the admitted rate is measured when a 429 comes.
DEFAULT_WINDOW = 1.0
#: The longest span (seconds) over which the admitted rate is measured.
MAX_SPAN = 10
#: The pace is never cut below this many requests per second.
MIN_RATE = 0.5


def checked_rate(value: object, name: str = "max_requests_per_second") -> float | None:
    """Return a rate limit in requests per second: ``None`` (no known limit) or a finite number above 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise WorkflowsoftConfigError(
            f"{name} is {value!r}, which is not a number of requests per second above 0 (leave it empty for no limit)"
        )
    return float(value)


class RateLimiter:
    """When the next request of a client may be sent; thread-safe, shared by every thread of the client.

    :param max_requests_per_second: a known limit of the tenant (``None``: unknown, learnt from 429 answers)
    :param clock: monotonic seconds (tests pass a fake clock)
    :param decrease: fraction of the admitted rate kept after a 429
    :param increase: growth per second without a 429, as a fraction of the rate set at the last cut
    :param window: the shortest span (seconds) over which the admitted rate is measured
    """

    def __init__(
        self,
        max_requests_per_second: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        decrease: float = DEFAULT_DECREASE,
        increase: float = DEFAULT_INCREASE,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        self.max_rate = checked_rate(max_requests_per_second)
        self.clock = clock
        self.decrease = decrease
        self.increase = increase
        self.window = window
        self._lock = threading.Lock()
        #: The pace set at the last cut (or the known limit); ``None``: unpaced.
        self._base: float | None = self.max_rate
        self._since = 0.0  # when the additive increase started (the end of the last pause)
        self._next_at = 0.0  # the earliest send time of the next reservation
        self.paused_until = 0.0
        #: Counts the cuts; a 429 to a request sent in an older epoch does not cut again.
        self.epoch = 0
        self.throttled_count = 0
        self._admitted: collections.deque[list[int]] = collections.deque()  # [second, answers other than 429]
        self._mark: float | None = None  # the last 429 that cut (or the first answer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate()!r}, max_requests_per_second={self.max_rate!r})"

    # -- reading --------------------------------------------------------------------------------------

    def rate(self, now: float | None = None) -> float | None:
        """Return the current pace in requests per second (``None``: unpaced)."""
        base = self._base
        if base is None:
            return None
        if self.epoch == 0:  # the known limit, never cut
            return base
        now = self.clock() if now is None else now
        grown = base + base * self.increase * max(0.0, now - self._since)
        return grown if self.max_rate is None else min(grown, self.max_rate)

    # -- sending --------------------------------------------------------------------------------------

    def reserve(self) -> tuple[float, int]:
        """Reserve a send time: ``(when, epoch)``, ``when`` on :attr:`clock`; now when unpaced and not paused.

        A reservation made before a cut is void (its epoch is older than :attr:`epoch`): reserve again.
        """
        now = self.clock()
        if self._base is None and now >= self.paused_until:  # unpaced: no lock, no bookkeeping
            return now, self.epoch
        with self._lock:
            when = max(now, self._next_at, self.paused_until)
            rate = self.rate(now)
            if rate is not None:
                self._next_at = when + 1.0 / rate
            return when, self.epoch

    # -- answers --------------------------------------------------------------------------------------

    def admitted(self) -> None:
        """Count an answer that was not a 429 (the admitted rate a cut is based on), per second of :attr:`clock`."""
        second = int(self.clock())
        counts = self._admitted
        if counts and counts[-1][0] == second:
            # Without the lock (every answer passes here): a count lost to a thread switch only makes the estimate
            # one answer lower. A cut replaces the deque rather than clearing it, so ``counts`` stays readable.
            counts[-1][1] += 1
            return
        with self._lock:
            counts = self._admitted
            if counts and counts[-1][0] == second:
                counts[-1][1] += 1
            else:
                counts.append([second, 1])
                while counts[0][0] < second - MAX_SPAN:
                    counts.popleft()
            if self._mark is None:
                self._mark = float(second)

    def throttled(self, epoch: int, pause: float) -> bool:
        """Hear a 429 to a request sent in ``epoch``: pause every thread for ``pause`` seconds, and cut the rate.

        The cut needs a measure: with fewer than two admitted answers since the last cut, the pause is all.

        :return: whether the rate was cut (the first 429 of an episode)
        """
        now = self.clock()
        with self._lock:
            self.throttled_count += 1
            self.paused_until = max(self.paused_until, now + max(0.0, pause))
            self._next_at = max(self._next_at, self.paused_until)
            if epoch != self.epoch or self._mark is None:
                return False  # sent before the last cut (that cut answered this episode), or nothing to measure
            start = max(self._mark, now - MAX_SPAN)
            count = sum(n for second, n in self._admitted if second >= int(start))
            if count < 2:
                return False
            admitted = count / max(self.window, now - start)
            current = self.rate(now)
            base = admitted if current is None else min(current, admitted)
            self._base = max(MIN_RATE, base * self.decrease)
            self._since = self.paused_until
            self._next_at = self.paused_until  # reservations of the old pace are void: start again after the pause
            self._admitted = collections.deque()
            self._mark = now
            self.epoch += 1
            return True


__all__ = ["RateLimiter", "checked_rate"]
