"""The client's pace (``api/limiter.py``) on a fake clock: unpaced by default, a known limit, cuts on 429, growth."""

from __future__ import annotations

import pytest

from airflow_provider_workflowsoft.api import limiter as limiter_module
from airflow_provider_workflowsoft.api.errors import WorkflowsoftConfigError
from airflow_provider_workflowsoft.api.limiter import RateLimiter, checked_rate
from tests.conftest import FakeClock


def reserve_times(limiter: RateLimiter, count: int) -> list[float]:
    return [round(limiter.reserve()[0], 6) for _ in range(count)]


def test_unpaced_by_default_every_reservation_is_now(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    assert limiter.rate() is None
    assert reserve_times(limiter, 5) == [1000.0] * 5
    assert limiter.epoch == 0


def test_a_known_limit_spaces_every_reservation(clock: FakeClock) -> None:
    limiter = RateLimiter(4, clock=clock)
    assert limiter.rate() == 4
    assert reserve_times(limiter, 4) == [1000.0, 1000.25, 1000.5, 1000.75]
    clock.now = 1010.0  # idle time does not bank a burst
    assert reserve_times(limiter, 2) == [1010.0, 1010.25]


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "10", True])
def test_a_bad_limit_is_refused_naming_the_field_and_value(value: object) -> None:
    with pytest.raises(WorkflowsoftConfigError) as info:
        checked_rate(value)
    assert "max_requests_per_second" in str(info.value) and repr(value) in str(info.value)
    assert "above 0" in str(info.value)


def test_a_429_pauses_every_reservation_and_cuts_to_the_admitted_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    for _ in range(40):  # 40 answers admitted within the first second
        limiter.admitted()
    clock.now = 1000.5
    _, epoch = limiter.reserve()
    assert limiter.throttled(epoch, pause=2.0) is True
    assert limiter.epoch == 1 and limiter.paused_until == 1002.5
    # admitted: 40 over the shortest span (1 s); cut to 0.85 x 40 = 34 per second
    assert limiter.rate() == pytest.approx(34.0)
    # every reservation waits for the end of the pause, then they are spaced 1/34 s apart
    first, second = reserve_times(limiter, 2)
    assert first == 1002.5 and second == pytest.approx(1002.5 + 1 / 34, abs=1e-6)


def test_only_the_first_429_of_an_episode_cuts(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    for _ in range(20):
        limiter.admitted()
    in_flight = [limiter.reserve()[1] for _ in range(5)]  # sent before the cut
    assert limiter.throttled(in_flight[0], pause=1.0) is True
    rate = limiter.rate()
    clock.now = 1000.2
    assert [limiter.throttled(epoch, pause=1.0) for epoch in in_flight[1:]] == [False] * 4
    assert limiter.rate() == rate and limiter.epoch == 1 and limiter.throttled_count == 5
    assert limiter.paused_until == pytest.approx(1001.2)  # the pause is the latest 429's


def test_without_a_measure_a_429_only_pauses(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    assert limiter.throttled(0, pause=3.0) is False  # nothing admitted yet: nothing to measure the rate by
    assert limiter.rate() is None and limiter.epoch == 0
    assert reserve_times(limiter, 2) == [1003.0, 1003.0]  # paused, not paced
    clock.now = 1003.0
    assert reserve_times(limiter, 1) == [1003.0]


def test_the_pace_grows_additively_after_the_pause_up_to_the_known_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(50, clock=clock)
    for _ in range(40):
        limiter.admitted()
    limiter.throttled(0, pause=1.0)
    assert limiter.rate() == pytest.approx(34.0)
    clock.now = 1001.0  # the pause ends: growth starts here
    assert limiter.rate() == pytest.approx(34.0)
    clock.now = 1003.0  # 2 s later: + 2 x 5 % of 34
    assert limiter.rate() == pytest.approx(34.0 * 1.1)
    clock.now = 1100.0
    assert limiter.rate() == 50  # never above the known limit


def test_the_next_cut_measures_since_the_last_one_and_never_raises_the_pace(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    for _ in range(100):
        limiter.admitted()
    limiter.throttled(0, pause=1.0)  # 85 per second
    clock.now = 1005.0
    for _ in range(150):  # 150 admitted over the 5 s since the cut: 30 per second
        limiter.admitted()
    assert limiter.throttled(1, pause=1.0) is True
    assert limiter.rate() == pytest.approx(0.85 * 30)
    assert limiter.epoch == 2


def test_the_admitted_rate_is_measured_over_at_most_max_span(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    limiter.admitted()  # long ago
    clock.now += 1000
    for _ in range(limiter_module.MAX_SPAN * 10):  # 10 per second over the last MAX_SPAN seconds
        limiter.admitted()
        clock.now += 0.1
    limiter.throttled(0, pause=0.0)
    assert limiter.rate() == pytest.approx(0.85 * 10, rel=0.15)


def test_the_cut_never_goes_below_the_minimum(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    limiter.admitted()
    limiter.admitted()
    clock.now += limiter_module.MAX_SPAN
    limiter.throttled(0, pause=0.0)
    assert limiter.rate() == limiter_module.MIN_RATE
