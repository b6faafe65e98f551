"""The batch worker as a long-running job worker: leases renewed while it works, a graceful stop, bounded reports.

Against the emulator over loopback (the ledger's rules with an injected clock); the same cases under real Airflow
(``airflow dags test``, a real SIGTERM and SIGKILL) are in ``tests/dag_runs/test_batch_lease.py``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.records import leases
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.leases import LeaseKeeper
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from bench.report_size import InMemoryApi
from tests.conftest import fake_context

CONN = "workflowsoft_default"
STEP = 11
HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def client(emu: EmulatorServer) -> Iterator[WorkflowsoftClient]:
    with WorkflowsoftClient(ClientConfig(base_url=emu.base_url, api_token="demo-token", max_retries=0,
                                         pool_size=16)) as c:
        yield c


def instances(*ids: int) -> list[dict[str, Any]]:
    return [{"IntegrationInstanceId": i, "ProcessInstanceId": 90 + i} for i in ids]


# -- the ledger's rules: a renewed lease, a dead holder, a hand-back ---------------------------------------------


@pytest.mark.parametrize("renewed", [True, False])
def test_a_renewed_claim_is_left_alone_and_a_dead_holders_comes_back_one_lease_after_its_last_renewal(
        renewed: bool) -> None:
    store, clock = MemoryStore(), Clock()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/work/-1", clock=clock)
    holder.claim(STEP, instances(5001, 5002))
    clock.now = T0 + dt.timedelta(minutes=50)
    if renewed:
        assert holder.renew() == 2  # one write for both
    clock.now = T0 + dt.timedelta(minutes=70)  # the claims are older than the lease
    other = ClaimsLedger(CONN, store, owner="dag/run2/work/-1", clock=clock)
    offered, skip = other.prepare_drain(STEP, HOUR, 10)
    if not renewed:  # the control: without the renewal the same moment re-offers both
        assert sorted(i["IntegrationInstanceId"] for i in offered) == [5001, 5002]
        return
    assert offered == [] and sorted(skip) == [5001, 5002]
    # the holder dies (renews no more): its claims come back one lease after its last renewal, not before
    clock.now = T0 + dt.timedelta(minutes=50 + 59)
    assert ClaimsLedger(CONN, store, owner="dag/run3/work/-1", clock=clock).prepare_drain(STEP, HOUR, 10)[0] == []
    clock.now = T0 + dt.timedelta(minutes=50 + 61)
    offered, _ = ClaimsLedger(CONN, store, owner="dag/run4/work/-1", clock=clock).prepare_drain(STEP, HOUR, 10)
    assert sorted(i["IntegrationInstanceId"] for i in offered) == [5001, 5002]


def test_renew_touches_only_the_given_open_claims_and_writes_nothing_for_none() -> None:
    store, clock = MemoryStore(), Clock()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/work/-1", clock=clock)
    holder.claim(STEP, instances(5001, 5002))
    clock.now = T0 + dt.timedelta(minutes=5)
    assert holder.renew([5002, 7777]) == 1
    record = store.get(holder.key)
    assert "renewed_at" not in record["claims"]["5001"]
    assert record["claims"]["5002"]["renewed_at"] == (T0 + dt.timedelta(minutes=5)).isoformat()
    assert holder.renew([7777]) == 0


def test_handed_back_claims_are_offered_at_once_and_keep_their_offer_count() -> None:
    store, clock = MemoryStore(), Clock()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/work/-1", clock=clock)
    holder.claim(STEP, instances(5001, 5002, 5003))
    assert holder.hand_back([5002, 5003, 7777]) == [5002, 5003]
    assert holder.renew() == 1  # a handed-back claim is not renewed: it stays free for the next run
    clock.now = T0 + dt.timedelta(minutes=1)  # well within the lease
    other = ClaimsLedger(CONN, store, owner="dag/run2/work/-1", clock=clock)
    offered, skip = other.prepare_drain(STEP, HOUR, 10, max_offers=2)
    assert sorted(i["IntegrationInstanceId"] for i in offered) == [5002, 5003] and skip == [5001]
    # the offer that never reached the callable does not count towards parking (max_offers=2: not parked yet)
    assert store.get(other.key)["claims"]["5002"]["offers"] == 1 and other.parked == []


def test_the_lease_keeper_beats_every_third_of_the_lease_and_only_for_what_is_held() -> None:
    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/work/-1")
    holder.claim(STEP, instances(5001, 5002))
    held = [5001]
    keeper = LeaseKeeper(holder, dt.timedelta(seconds=0.3), held=lambda: held)
    assert keeper.interval == pytest.approx(0.1)
    with keeper:
        deadline = time.monotonic() + 10
        while keeper.renewals < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        held.clear()  # nothing held: a beat writes nothing
        renewals = keeper.renewals
        time.sleep(0.35)
    assert renewals >= 2 and keeper.renewals == renewals
    claims = store.get(holder.key)["claims"]
    assert "renewed_at" in claims["5001"] and "renewed_at" not in claims["5002"]
    assert leases.renew_interval(None) is None and leases.renew_interval(dt.timedelta(0)) is None
    assert LeaseKeeper(None, HOUR).start().interval is None  # nothing recorded, nothing renewed


# -- the engine: work longer than the lease is done once --------------------------------------------------------


def _wait_until_started(calls: collections.Counter[int], count: int, timeout: float = 10) -> None:
    """Wait until the callable of ``_slow`` has started ``count`` instances (each worker holds one)."""
    deadline = time.monotonic() + timeout
    while sum(calls.values()) < count:
        assert time.monotonic() < deadline, f"only {sum(calls.values())} of {count} instances started"
        time.sleep(0.01)


def _slow(calls: collections.Counter[int], seconds: float, started: threading.Event | None = None,
          until: threading.Event | None = None) -> Any:
    def work(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        calls[int(instance["IntegrationInstanceId"])] += 1
        if started is not None:
            started.set()
        if until is not None:
            until.wait(30)
        else:
            time.sleep(seconds)
        return {"Venue code": f"V-{instance['IntegrationInstanceId']}"}

    return work


@pytest.mark.parametrize("renewing", [True, False])
def test_a_second_run_does_not_take_what_a_live_slow_run_holds(
        emu: EmulatorServer, client: WorkflowsoftClient, monkeypatch: pytest.MonkeyPatch, renewing: bool) -> None:
    # The case scaled down (lease 10 s, 14 s per instance, 8 instances, 4 workers, second run 14 s later):
    # lease 0.6 s, 0.84 s per instance, 8 instances, 4 workers, the second run 0.84 s after the first.
    if not renewing:  # the control: the same timing without renewals re-offers what the first run is working on
        monkeypatch.setattr("airflow_provider_workflowsoft.records.leases.renew_interval", lambda *a, **k: None)
    lease, per_instance = dt.timedelta(seconds=0.6), 0.84
    ids = [int(i["IntegrationInstanceId"]) for i in emu.create_instances(STEP, count=8)]
    store, calls = MemoryStore(), collections.Counter[int]()
    first = WorkerEngine(client, _slow(calls, per_instance), integration_step_id=STEP, max_instances=8, max_workers=4,
                        claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"), reclaim_after=lease,
                        progress_interval=None)
    reports: dict[str, dict[str, Any]] = {}
    runner = threading.Thread(target=lambda: reports.setdefault("first", first.run()))
    runner.start()
    time.sleep(per_instance)
    second = WorkerEngine(client, _slow(calls, 0.0), integration_step_id=STEP, max_instances=8, max_workers=4,
                         claims=ClaimsLedger(CONN, store, owner="dag/run2/work/-1"), reclaim_after=lease,
                         progress_interval=None)
    reports["second"] = second.run()
    runner.join(30)
    if not renewing:
        assert reports["second"]["processed"] > 0 and max(calls.values()) == 2
        return
    assert reports["second"]["processed"] == 0, reports["second"]
    assert calls == {i: 1 for i in ids}  # the callable ran once per instance
    first_report = reports["first"]
    assert first_report["succeeded_count"] == 8 and first_report["already_completed_count"] == 0
    assert first_report["lease_renewals"] >= 2
    assert store.keys("workflowsoft.") == []  # nothing left behind


# -- the graceful stop -------------------------------------------------------------------------------------------


def test_a_stop_finishes_what_is_in_flight_and_hands_back_the_rest_to_the_next_run_at_once(
        emu: EmulatorServer, client: WorkflowsoftClient) -> None:
    ids = [int(i["IntegrationInstanceId"]) for i in emu.create_instances(STEP, count=8)]
    store, calls, started = MemoryStore(), collections.Counter[int](), threading.Event()
    engine = WorkerEngine(client, _slow(calls, 0.5, started), integration_step_id=STEP, max_instances=8,
                         max_workers=2, claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"),
                         reclaim_after=HOUR, progress_interval=None, grace_period=10)
    reports: dict[str, dict[str, Any]] = {}
    runner = threading.Thread(target=lambda: reports.setdefault("first", engine.run()))
    runner.start()
    assert started.wait(10)
    _wait_until_started(calls, 2)  # the first start alone leaves the second worker's start racing the stop
    engine.stop("SIGTERM")
    runner.join(30)
    report = reports["first"]
    assert report["stopped"] == "SIGTERM" and report["in_flight_at_stop"] == []
    assert report["succeeded_count"] == 2 and report["failed_count"] == 0
    # polled and claimed but not started: handed back (the polls stopped, so the rest is still new in Workflowsoft)
    assert report["handed_back_count"] >= 1 and not set(report["handed_back"]) & set(report["succeeded"])
    assert sum(calls.values()) == 2
    record = store.get(ClaimsLedger(CONN, store, owner="dag/run1/work/-1").key)
    assert record["closed"] and sorted(int(i) for i in record["claims"]) == sorted(report["handed_back"])
    assert all(c["released"] and c["handed_back"] for c in record["claims"].values())
    # the next run takes the handed-back instances at once (lease 1 hour) and the rest, nothing twice
    nxt = WorkerEngine(client, _slow(calls, 0.0), integration_step_id=STEP, max_instances=8, max_workers=4,
                      claims=ClaimsLedger(CONN, store, owner="dag/run2/work/-1"), reclaim_after=HOUR,
                      progress_interval=None).run()
    assert nxt["succeeded_count"] == 6 and nxt["already_completed_count"] == 0
    assert calls == {i: 1 for i in ids}
    assert store.keys("workflowsoft.") == []


def test_instances_in_flight_after_the_grace_period_stay_claimed(emu: EmulatorServer,
                                                                  client: WorkflowsoftClient) -> None:
    emu.create_instances(STEP, count=4)
    store, calls, started, release = MemoryStore(), collections.Counter[int](), threading.Event(), threading.Event()
    engine = WorkerEngine(client, _slow(calls, 0, started, until=release), integration_step_id=STEP, max_instances=4,
                         max_workers=2, claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"),
                         reclaim_after=HOUR, progress_interval=None, grace_period=0.2)
    reports: dict[str, dict[str, Any]] = {}
    runner = threading.Thread(target=lambda: reports.setdefault("first", engine.run()))
    runner.start()
    try:
        assert started.wait(10)
        _wait_until_started(calls, 2)
        engine.stop("SIGTERM")
        runner.join(30)
        report = reports["first"]
        assert len(report["in_flight_at_stop"]) == 2 and report["handed_back_count"] == 2
        # the two in flight keep their claims (offered again after the lease), the two handed back are free now
        offered, skip = ClaimsLedger(CONN, store, owner="dag/run2/work/-1").prepare_drain(STEP, HOUR, 10)
        assert sorted(i["IntegrationInstanceId"] for i in offered) == sorted(report["handed_back"])
        assert sorted(skip) == sorted(report["in_flight_at_stop"])
    finally:
        release.set()


class _Timeout(Exception):
    """What the SIGALRM handler of the test raises in the main thread (Airflow's ``AirflowTaskTimeout`` stands in)."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _Timeout("execution_timeout")


def test_a_task_timeout_in_the_run_stops_it_gracefully_and_goes_on(emu: EmulatorServer,
                                                                    client: WorkflowsoftClient) -> None:
    # As Airflow's execution_timeout does: SIGALRM, whose handler raises in the task's main thread. A real signal
    # (not ``_thread.interrupt_main``, which waits for the main thread's next bytecode) lands while the run waits.
    emu.create_instances(STEP, count=6)
    store, calls, started = MemoryStore(), collections.Counter[int](), threading.Event()
    engine = WorkerEngine(client, _slow(calls, 0.3, started), integration_step_id=STEP, max_instances=6,
                         max_workers=1, claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"),
                         reclaim_after=HOUR, progress_interval=None, grace_period=10)
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        threading.Thread(target=lambda: started.wait(10) and os.kill(os.getpid(), signal.SIGALRM), daemon=True).start()
        with pytest.raises(_Timeout):
            engine.run()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert engine.stopping and engine.outcomes["handed_back"] and engine.outcomes["in_flight"] == []
    assert sum(calls.values()) < 6  # stopped: not every instance ran
    record = store.get(ClaimsLedger(CONN, store, owner="dag/run1/work/-1").key)
    assert record["closed"] is True
    assert sorted(int(i) for i, c in record["claims"].items() if c.get("released")) == sorted(
        engine.outcomes["handed_back"])


# -- bounded reports (the engine against bench/report_size.py's in-memory API: 10,000 instances in seconds) -------


@pytest.mark.parametrize("full_report", [False, True])
def test_the_report_of_10000_instances_stays_bounded_unless_the_full_report_is_asked(full_report: bool) -> None:
    n, failing = 10_000, set(range(10, 10_000, 50))  # 200 failures
    engine = WorkerEngine(InMemoryApi(n, failing, error_chars=3000), lambda fields, instance: {
        "Venue code": f"HALL-{instance['IntegrationInstanceId']:06d}", "Event exists": True},
        integration_step_id=STEP, max_instances=n, max_workers=16,
        claims=ClaimsLedger(CONN, MemoryStore(), owner="dag/run1/work/-1"), progress_interval=None,
        full_report=full_report)
    report = engine.run()
    size = len(json.dumps(report))
    assert report["processed"] == n and report["succeeded_count"] == n - 200 and report["failed_count"] == 200
    assert {f["IntegrationInstanceId"] for f in report["failed"]} == failing  # every failure
    assert report["fields_written"] == ["Event exists", "Venue code"]
    if full_report:
        assert len(report["succeeded"]) == n - 200 and len(report["results"]) == n - 200 and size > 500_000
        assert report["truncated"] is False
        return
    assert report["truncated"] is True and report["report_ids_limit"] == 100
    assert report["succeeded"] == sorted(set(range(1, n + 1)) - failing, key=str)[:100]
    assert set(report["results"]) == {str(i) for i in report["succeeded"]}
    assert report["results"]["1"] == {"Venue code": "HALL-000001", "Event exists": True}
    assert len(report["failed"][0]["error"]) == 2000 and len(report["failed"][-1]["error"]) == 200
    # 100 ids and their values, 100 long errors and 100 short ones: about 250 KB whatever the batch size
    assert size < 300_000, size
    assert len(json.dumps(engine.outcomes["results"])) > 400_000  # what the full report holds


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS,
                    reason="object storage (ObjectStoragePath) as the Task SDK gives it: Airflow 3")
def test_the_full_report_goes_to_object_storage_and_the_xcom_names_it(emu: EmulatorServer, tmp_path: Path) -> None:
    emu.create_instances(STEP, count=30)
    url = f"file://{tmp_path}/reports/run1.json"
    op = WorkflowsoftIntegrationWorkerOperator(task_id="work", ledger_store=MemoryStore(), integration_step_id=STEP,
                                               python_callable=lambda fields: {"Venue code": "V"}, max_instances=30,
                                               report_ids_limit=5, full_report=url, progress_interval=None)
    report = op.execute(fake_context("work"))  # type: ignore[arg-type]
    assert report["succeeded_count"] == 30 and len(report["succeeded"]) == 5 and report["truncated"] is True
    assert report["full_report"] == url
    full = json.loads((tmp_path / "reports" / "run1.json").read_text())
    assert len(full["succeeded"]) == 30 and full["results"][str(full["succeeded"][-1])] == {"Venue code": "V"}


@pytest.mark.parametrize(("argument", "value", "reason"), [
    ("grace_period", -1, "grace_period must be a number of seconds of 0 or more"),
    ("report_ids_limit", -5, "report_ids_limit must be a whole number of 0 or more"),
    ("full_report", 3, "full_report must be True, False or an object-storage URL, got 3"),
])
def test_bad_stop_and_report_arguments_are_refused_naming_them(argument: str, value: Any, reason: str) -> None:
    from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError

    with pytest.raises(WorkflowsoftInputError, match=reason):
        WorkflowsoftIntegrationWorkerOperator(task_id="work", integration_step_id=STEP,
                                              python_callable=lambda fields: None, **{argument: value})
