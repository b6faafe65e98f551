"""The emulator's rate-limit switch: one token bucket for the tenant, 429 with Retry-After over it, counted."""

from __future__ import annotations

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer, EmulatorState
from airflow_provider_workflowsoft.emulator.__main__ import build_parser
from tests.conftest import FakeClock

from .conftest import Api


def test_the_bucket_admits_its_burst_then_one_request_per_token() -> None:
    clock = FakeClock()
    state = EmulatorState(clock=clock, rate_limit=2)  # burst: one second's worth
    assert [state.take_rate_token() for _ in range(2)] == [None, None]
    assert state.take_rate_token() == pytest.approx(0.5)  # refused: the next token in half a second
    clock.now += 0.5
    assert state.take_rate_token() is None
    assert state.rate_limit_stats() == {"requests_per_second": 2.0, "burst": 2.0, "admitted": 3, "refused": 1}
    clock.now += 100  # the bucket holds its burst at most
    assert [state.take_rate_token() for _ in range(3)][-1] is not None


def test_no_limit_by_default_and_bad_limits_are_refused() -> None:
    state = EmulatorState()
    assert all(state.take_rate_token() is None for _ in range(1000))
    assert state.rate_limit_stats()["refused"] == 0
    with pytest.raises(ValueError, match=r"rate_limit must be a number >= 0 \(0: off\); got -1"):
        EmulatorState(rate_limit=-1)
    with pytest.raises(ValueError, match="rate_limit_burst"):
        state.update_settings(rate_limit_burst="many")


def test_over_the_limit_the_api_answers_429_with_retry_after_and_counts_it(emulator: EmulatorServer,
                                                                           api: Api) -> None:
    # 2 requests of burst, then one token every 100 s: the third request is refused whatever the machine's speed
    set_to = api.admin("POST", "rate-limit", json={"requests_per_second": 0.01, "burst": 2})
    assert set_to.status_code == 200 and set_to.json()["requests_per_second"] == 0.01
    assert [api.get("/api/v2/workflows").status_code for _ in range(2)] == [200, 200]
    refused = api.poll()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "100"  # whole seconds, rounded up
    assert "Rate limit exceeded" in refused.json()["Message"]
    assert api.admin("GET", "health").status_code == 200  # admin endpoints are never limited
    stats = api.admin("GET", "rate-limit").json()
    assert (stats["admitted"], stats["refused"], stats["burst"]) == (2, 1, 2.0)
    assert emulator.snapshot()["rate_limit"]["refused"] == 1
    assert [e["status"] for e in emulator.request_log()] == [200, 200, 429]
    api.admin("DELETE", "requests")  # the counts go with the request log
    assert api.admin("GET", "rate-limit").json()["refused"] == 0
    api.admin("POST", "rate-limit", json={"requests_per_second": 0})  # off again
    assert api.get("/api/v2/workflows").status_code == 200
    assert api.admin("POST", "rate-limit", json={"per_minute": 5}).status_code == 400


def test_the_switch_on_the_command_line_and_in_the_settings() -> None:
    args = build_parser().parse_args(["--rate-limit", "200", "--rate-limit-burst", "50"])
    assert (args.rate_limit, args.rate_limit_burst) == (200.0, 50.0)
    with EmulatorServer(rate_limit=200) as server:
        assert server.rate_limit_stats()["burst"] == 200.0
        server.update_settings(rate_limit=0)
        assert server.state.get_settings()["rate_limit"] == 0
        server.reset()  # back to the limit it was started with
        assert server.state.get_settings()["rate_limit"] == 200
