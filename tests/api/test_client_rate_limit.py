"""Both clients against a rate-limited server (requests-mock, httpx.MockTransport): one pace per client.

A 429 with ``Retry-After`` pauses every caller of the client, not only the one that got it, and cuts the pace to
what the server admitted; a known ``max_requests_per_second`` spaces every request. The clock is fake and the sleeps
are recorded: nothing here waits.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
import requests_mock as requests_mock_module

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftConfigError
from airflow_provider_workflowsoft.api.limiter import RateLimiter

from ..conftest import BASE, TOKEN, FakeClock, SleepRecorder

LIST = BASE + "/api/v2/workflows"
OK: dict[str, Any] = {"status_code": 200, "json": []}
THROTTLED: dict[str, Any] = {"status_code": 429, "headers": {"Retry-After": "3"}, "json": {"Message": "slow down"}}


def sync_client(limiter: RateLimiter, sleep: SleepRecorder, **config: Any) -> WorkflowsoftClient:
    return WorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN, **config), sleep=sleep, limiter=limiter,
                              token_cache=protocol.TokenCache(), rand=lambda: 0.0)


def test_each_client_owns_a_limiter_of_its_config() -> None:
    one = WorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN))
    two = WorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN, max_requests_per_second=20))
    assert one.limiter is not two.limiter
    assert one.limiter.rate() is None and two.limiter.rate() == 20
    fresh = AsyncWorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN, max_requests_per_second=5))
    assert fresh.limiter.rate() == 5


@pytest.mark.parametrize("value", [0, -2.5, float("nan")])
def test_a_bad_max_requests_per_second_is_refused_before_anything_is_sent(value: float) -> None:
    with pytest.raises(WorkflowsoftConfigError, match=r"max_requests_per_second is .*not a number of requests"):
        ClientConfig(base_url=BASE, api_token=TOKEN, max_requests_per_second=value)


def test_without_a_limit_or_a_429_nothing_waits(rm: requests_mock_module.Mocker, clock: FakeClock,
                                                sleep: SleepRecorder) -> None:
    rm.get(LIST, [OK] * 20)
    client = sync_client(RateLimiter(clock=clock), sleep)
    for _ in range(20):
        client.list_process_diagrams()
    assert sleep.calls == [] and client.limiter.rate() is None


def test_a_429_pauses_every_caller_of_the_client_and_the_pace_adapts(
    rm: requests_mock_module.Mocker, clock: FakeClock, sleep: SleepRecorder
) -> None:
    rm.get(LIST, [OK] * 10 + [THROTTLED] + [OK] * 10)
    client = sync_client(RateLimiter(clock=clock), sleep)
    for _ in range(10):  # ten answers admitted within the first second
        client.list_process_diagrams()
    assert sleep.calls == []

    client.list_process_diagrams()  # 429, Retry-After 3: its own retry waits 3 s, then succeeds
    assert sleep.calls == [3.0] and len(rm.request_history) == 12
    assert client.limiter.epoch == 1 and client.limiter.rate() == pytest.approx(8.5)  # 0.85 x 10 per second

    # other callers (the other threads of a batch worker) sending at the same moment wait for the same pause, then
    # go one after the other at the new pace (the retry took the first slot after the pause)
    client.list_process_diagrams()
    client.list_process_diagrams()
    assert sleep.calls[1:] == [pytest.approx(3.0 + 1 / 8.5), pytest.approx(3.0 + 2 / 8.5)]


def test_all_threads_wait_for_the_pause_a_429_of_one_of_them_started(
    rm: requests_mock_module.Mocker, clock: FakeClock
) -> None:
    rm.get(LIST, [OK] * 10 + [THROTTLED] + [OK] * 20)
    waits: dict[str, list[float]] = {}
    lock = threading.Lock()

    def sleep(seconds: float) -> None:  # records per thread, never waits
        with lock:
            waits.setdefault(threading.current_thread().name, []).append(seconds)

    client = WorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN), sleep=sleep,
                                limiter=RateLimiter(clock=clock), token_cache=protocol.TokenCache(), rand=lambda: 0.0)
    for _ in range(10):
        client.list_process_diagrams()
    client.list_process_diagrams()  # the 429: every thread started afterwards is paused, none backs off alone
    threads = [threading.Thread(target=client.list_process_diagrams, name=f"worker-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == ["MainThread"] + [f"worker-{i}" for i in range(8)]
    assert waits["MainThread"] == [3.0]  # the retry of the 429, which then took the first slot after the pause
    firsts = sorted(calls[0] for name, calls in waits.items() if name != "MainThread")
    assert firsts == pytest.approx([3.0 + i / 8.5 for i in range(1, 9)])  # paused, then spaced by the pace


def test_a_known_limit_spaces_requests_and_a_429_still_cuts_below_it(
    rm: requests_mock_module.Mocker, clock: FakeClock, sleep: SleepRecorder
) -> None:
    rm.get(LIST, [OK] * 4 + [THROTTLED, OK])
    client = sync_client(RateLimiter(4, clock=clock), sleep, max_requests_per_second=4)
    for _ in range(4):
        client.list_process_diagrams()
    assert sleep.calls == pytest.approx([0.25, 0.5, 0.75])  # the clock stands still: every slot 1/4 s later
    client.list_process_diagrams()
    assert client.limiter.epoch == 1 and client.limiter.rate() < 4


def test_the_async_client_follows_the_same_pace(clock: FakeClock) -> None:
    answers = iter([httpx.Response(200, json=[])] * 10
                   + [httpx.Response(429, headers={"Retry-After": "3"}, json={"Message": "slow"})]
                   + [httpx.Response(200, json=[])] * 4)
    sleeps: list[float] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        return next(answers)

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def go() -> RateLimiter:
        async with AsyncWorkflowsoftClient(
            ClientConfig(base_url=BASE, api_token=TOKEN), transport=httpx.MockTransport(handler), sleep=fake_sleep,
            token_cache=protocol.TokenCache(), limiter=RateLimiter(clock=clock), rand=lambda: 0.0,
        ) as client:
            for _ in range(11):
                await client.request(protocol.call_list_process_diagrams(None, 1))
            await asyncio.gather(*(client.request(protocol.call_list_process_diagrams(None, 1)) for _ in range(3)))
            return client.limiter

    limiter = asyncio.run(go())
    assert limiter.epoch == 1 and limiter.rate() == pytest.approx(8.5)
    assert sleeps[0] == 3.0  # the retry of the 429
    assert sorted(sleeps[1:]) == pytest.approx([3.0 + i / 8.5 for i in (1, 2, 3)])  # the others: paused, paced


def test_request_events_carry_the_pace_and_the_wait(
    rm: requests_mock_module.Mocker, clock: FakeClock, sleep: SleepRecorder
) -> None:
    events: list[protocol.RequestEvent] = []
    rm.get(LIST, [OK] * 3)
    client = WorkflowsoftClient(ClientConfig(base_url=BASE, api_token=TOKEN, max_requests_per_second=2), sleep=sleep,
                                limiter=RateLimiter(2, clock=clock), token_cache=protocol.TokenCache(),
                                on_request=events.append)
    for _ in range(3):
        client.list_process_diagrams()
    assert [e.rate for e in events] == [2, 2, 2]
    assert [e.waited for e in events] == pytest.approx([0.0, 0.5, 1.0])
