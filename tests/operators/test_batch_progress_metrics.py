"""The batch worker while it runs: progress lines at a steady pace, and Airflow metrics (real StatsD packets over
loopback UDP) for requests, latency, 429 answers, retries, instances, claim writes and open claims."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS
from tests.conftest import FakeTI

STEP = 11
CONN = "ws_progress"
POLL_PATH = "/api/v2/workflows/instances/new-integrations"
PROGRESS = re.compile(
    r"Progress: (\d+) received(?: \((\d+) reclaimed\))?, (\d+) completed, (\d+) failed, "
    r"([\d.]+) per second, ([\d.]+) s elapsed"
)


@pytest.fixture
def conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token"}))
    return CONN


def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    return {"Venue code": f"V-{instance['IntegrationInstanceId']}"}


def run(op: WorkflowsoftIntegrationWorkerOperator, run_id: str = "run1") -> tuple[Any, BaseException | None]:
    ti = FakeTI("work", dag_id="progress_dag", run_id=run_id)
    try:
        return op.execute({"ti": ti}), None  # type: ignore[arg-type]
    except Exception as exc:
        return None, exc


def make_op(store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationWorkerOperator:
    kwargs.setdefault("python_callable", enrich)
    return WorkflowsoftIntegrationWorkerOperator(task_id="work", workflowsoft_conn_id=CONN, integration_step_id=STEP,
                                                 ledger_store=store, **kwargs)


# -- progress ------------------------------------------------------------------------------------------------


def test_progress_lines_come_at_a_steady_pace_with_growing_counts(
    emulator: EmulatorServer, conn: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.create_instances(STEP, count=24)
    emulator.update_settings(latency_ms=25)  # about 100 ms per instance, 2 at a time: a run of 1.2 s or more
    caplog.set_level(logging.INFO, logger="airflow_provider_workflowsoft.worker.engine")

    report, error = run(make_op(MemoryStore(), max_workers=2, pollers=1, progress_interval=0.2))

    assert error is None and report is not None and len(report["succeeded"]) == 24
    lines = [m for m in (PROGRESS.search(r.getMessage()) for r in caplog.records) if m]
    assert len(lines) >= 3, caplog.text
    assert len(lines) <= report["seconds"] / 0.2 + 1  # a steady pace, not a line per instance
    completed = [int(m.group(3)) for m in lines]
    elapsed = [float(m.group(6)) for m in lines]
    assert completed == sorted(completed) and completed[-1] > completed[0], completed
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0.15, elapsed
    assert all(int(m.group(1)) >= int(m.group(3)) + int(m.group(4)) for m in lines)  # received >= finished
    assert any(float(m.group(5)) > 0 for m in lines)  # a rate once something finished


def test_progress_interval_none_is_silent_and_a_bad_one_is_refused(
    emulator: EmulatorServer, conn: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.create_instances(STEP, count=3)
    emulator.update_settings(latency_ms=30)
    caplog.set_level(logging.INFO, logger="airflow_provider_workflowsoft.worker.engine")
    report, error = run(make_op(MemoryStore(), progress_interval=None))
    assert error is None and report is not None and len(report["succeeded"]) == 3
    assert "Progress:" not in caplog.text
    for bad in (-1, "often", float("nan"), True):
        with pytest.raises(WorkflowsoftInputError, match=r"progress_interval must be a number of seconds.*got"):
            make_op(MemoryStore(), progress_interval=bad)


# -- metrics: real StatsD packets ----------------------------------------------------------------------------


class StatsdReceiver:
    """A StatsD server on loopback UDP: collects ``name:value|type`` packets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.3)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> dict[str, list[tuple[float, str]]]:
        """Every metric received so far: ``{name: [(value, type), ...]}`` (the ``airflow.`` prefix removed)."""
        metrics: dict[str, list[tuple[float, str]]] = defaultdict(list)
        while True:
            try:
                packet = self.sock.recv(65535).decode()
            except TimeoutError:
                return metrics
            for line in packet.splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                metrics[name.removeprefix("airflow.")].append((float(value), kind.split("|")[0]))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StatsdReceiver]:
    """Airflow configured to send StatsD to a loopback receiver, and its ``Stats`` initialised the way
    Airflow 3's task runner does at the start of every task (``stats.initialize(factory=...)``)."""
    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("initialises Stats the way Airflow 3.3's task runner does (airflow.sdk.observability, new in "
                    "3.3); Airflow 2.11 and 3.1 set up their Stats elsewhere")
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    receiver = StatsdReceiver()
    for option, value in (("STATSD_ON", "True"), ("STATSD_HOST", "127.0.0.1"), ("STATSD_PORT", str(receiver.port)),
                          ("STATSD_PREFIX", "airflow")):
        monkeypatch.setenv(f"AIRFLOW__METRICS__{option}", value)
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    yield receiver
    stats.initialize(factory=NoStatsLogger, export_legacy_names=False)
    receiver.close()


def total(metrics: dict[str, list[tuple[float, str]]], name: str, kind: str = "c") -> float:
    return sum(value for value, k in metrics.get(name, []) if k == kind)


def test_a_batch_run_sends_request_instance_and_claim_metrics(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=6)]
    bad = created[2]
    # The first two polls are refused with 429 (Retry-After: 0): answered by retries, and counted.
    emulator.set_faults(error_rate=1.0, error_statuses=[429], retry_after=0, paths=[POLL_PATH], max_faults=2)

    def sometimes(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        if instance["IntegrationInstanceId"] == bad:
            raise RuntimeError("venue lookup failed")
        return {"Venue code": "OK"}

    store = MemoryStore()
    _report, error = run(make_op(store, python_callable=sometimes, max_workers=3, pollers=1))
    assert error is not None and str(bad) in str(error)
    metrics = statsd.drain()

    assert total(metrics, "workflowsoft.instances.completed") == 5
    assert total(metrics, "workflowsoft.instances.failed") == 1
    assert len(metrics["workflowsoft.instances.completed_duration"]) == 5
    assert all(kind == "ms" for _, kind in metrics["workflowsoft.instances.completed_duration"])
    assert total(metrics, "workflowsoft.api.throttled") == 2
    assert total(metrics, "workflowsoft.api.retries.poll") == 2
    assert total(metrics, "workflowsoft.api.errors.poll") == 2
    polls = len([r for r in emulator.request_log() if r["path"] == POLL_PATH])
    assert total(metrics, "workflowsoft.api.requests.poll") == polls  # every request sent, retries included
    assert total(metrics, "workflowsoft.api.requests.get_fields") == 6
    assert total(metrics, "workflowsoft.api.requests.complete") == 5
    assert len(metrics["workflowsoft.api.latency.complete"]) == 5
    assert all(kind == "ms" and value >= 0 for value, kind in metrics["workflowsoft.api.latency.get_fields"])
    assert total(metrics, "workflowsoft.claims.writes") >= 2  # the claims, then the record closed
    assert metrics["workflowsoft.claims.open.11"] == [(1.0, "g")]  # the failed one stays claimed
    assert metrics["workflowsoft.claims.oldest_age.11"][0][1] == "g"
    # Names never carry an instance id, a token or an address; only the endpoint kind and the step id vary.
    names = set(metrics)
    assert all(str(iid) not in name for iid in created for name in names), names
    assert all(re.fullmatch(r"workflowsoft\.[a-z_.]+(\.11)?", name) for name in names), names

    # The next try takes the failed instance back at once: counted as reclaimed, and nothing stays open.
    report, error = run(make_op(store, max_workers=3, pollers=1), run_id="run1")
    assert error is None and report is not None and report["succeeded"] == [bad]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.reclaimed") == 1
    assert total(metrics, "workflowsoft.instances.completed") == 1
    assert metrics["workflowsoft.claims.open.11"] == [(0.0, "g")]


def test_the_clients_pace_is_a_gauge_and_its_waits_a_timer(
    emulator: EmulatorServer, statsd: StatsdReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token",
         "extra": {"max_requests_per_second": 100}}))
    emulator.create_instances(STEP, count=4)
    report, error = run(make_op(MemoryStore(), max_workers=4))
    assert error is None and report is not None and len(report["succeeded"]) == 4
    metrics = statsd.drain()
    assert metrics["workflowsoft.api.rate_limit"] == [(100.0, "g")]  # sent once: the pace did not change
    waits = [value for name, values in metrics.items() if name.startswith("workflowsoft.api.limiter_wait.")
             for value, kind in values if kind == "ms"]
    assert waits and all(value > 0 for value in waits)  # 4 pollers at once: all but one waited for the pace


def test_nothing_is_measured_when_airflow_sends_no_metrics(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=2)
    op = make_op(MemoryStore())
    report, error = run(op)
    assert error is None and report is not None
    assert op.metrics() is None and op.hook.client.on_request is None  # no observer: no per-request cost


def test_the_sensor_sends_open_claims_and_reclaimed_instances(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    import datetime as dt

    from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
    from tests.conftest import fake_context

    emulator.create_instances(STEP, count=3)
    store = MemoryStore()

    def sensor(task_id: str) -> WorkflowsoftIntegrationSensor:
        return WorkflowsoftIntegrationSensor(task_id=task_id, integration_step_id=STEP, workflowsoft_conn_id=CONN,
                                             max_instances=2, reclaim_after=dt.timedelta(0), ledger_store=store)

    assert len(sensor("first").poke(fake_context("first")).xcom_value) == 2  # type: ignore[arg-type]
    metrics = statsd.drain()
    assert metrics["workflowsoft.claims.open.11"] == [(2.0, "g")]  # received, not completed yet
    assert total(metrics, "workflowsoft.api.requests.poll") == 2
    assert "workflowsoft.instances.reclaimed" not in metrics

    # Another task whose lease on them is over (reclaim_after=0) takes both back first.
    taken = sensor("second").poke(fake_context("second")).xcom_value  # type: ignore[arg-type]
    assert [i.get("reclaimed") for i in taken] == [True, True]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.reclaimed") == 2
    assert metrics["workflowsoft.claims.open.11"] == [(2.0, "g")]


def test_the_async_client_of_triggers_is_measured_too(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    import asyncio

    from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

    emulator.create_instances(STEP, count=1)

    async def poll() -> Any:
        client = await WorkflowsoftHook(CONN).get_async_client()
        try:
            return await client.poll_new_integration(STEP)
        finally:
            await client.aclose()

    assert asyncio.run(poll()) is not None
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.api.requests.poll") == 1
    assert len(metrics["workflowsoft.api.latency.poll"]) == 1


# -- parking, the trace of a killed drain, and the triggers' claims metrics ----------------------------------


def plant_killed_drain(store: MemoryStore, owner: str, up_to: int) -> None:
    """What a drain killed while polling leaves in its record: a claim written, then the trace of its polls."""
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger

    dying = ClaimsLedger(CONN, store, owner=owner)
    dying.start_polling(STEP, up_to)
    # ... killed here: up to `up_to` answers in flight were never claimed


def test_the_batch_worker_counts_parked_instances_and_a_killed_drain_it_finds(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    from airflow_provider_workflowsoft.records import naming

    (poison,) = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=1)]

    def refuse(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("refused every time")

    store = MemoryStore()
    plant_killed_drain(store, naming.owner_from_context({"ti": FakeTI("work", dag_id="progress_dag",
                                                                      run_id="run1")}), 16)
    _report, error = run(make_op(store, python_callable=refuse, max_offers=2))  # offer 1, fails
    assert error is not None
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.claims.interrupted_drains") == 1  # the earlier try's trace, found
    assert total(metrics, "workflowsoft.claims.possibly_lost") == 16  # "up to 16" instances to look for
    assert "workflowsoft.instances.parked" not in metrics
    run(make_op(store, python_callable=refuse, max_offers=2))  # offer 2, fails
    report, error = run(make_op(store, python_callable=refuse, max_offers=2))  # parked instead of offer 3
    assert error is None and report is not None and report["parked"] == [poison]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.parked") == 1
    assert "workflowsoft.claims.interrupted_drains" not in metrics  # each trace is reported once
    assert metrics["workflowsoft.claims.open.11"][-1] == (0.0, "g")  # parked is not open


def test_the_sensor_counts_parked_instances_and_a_killed_drain_it_finds(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    import datetime as dt

    from airflow_provider_workflowsoft.records.claims import ClaimsLedger
    from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
    from tests.conftest import fake_context

    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="dag/run0/wait/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": 7001, "offers": 2}])  # handed out twice already
    holder.close()
    plant_killed_drain(store, "dag/run1/wait/-1", 1)  # this task instance's earlier try died while polling
    emulator.create_instances(STEP, count=1)
    sensor = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, workflowsoft_conn_id=CONN,
                                           max_instances=5, reclaim_after=dt.timedelta(0), max_offers=2,
                                           ledger_store=store)
    ctx = fake_context("wait", dag_id="dag", run_id="run1")
    assert [i["IntegrationInstanceId"] for i in sensor.poke(ctx).xcom_value] == [5001]  # type: ignore[arg-type]
    assert ctx["ti"].xcom["parked"] == [7001]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.parked") == 1
    assert total(metrics, "workflowsoft.claims.interrupted_drains") == 1
    assert total(metrics, "workflowsoft.claims.possibly_lost") == 1
    assert metrics["workflowsoft.claims.open.11"] == [(1.0, "g")]


def test_the_deferred_trigger_sends_reclaimed_parked_and_open_claims(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger
    from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger
    from tests.assets.test_event_driven import events_of

    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": 7001, "offers": 3}, {"IntegrationInstanceId": 7002}])
    holder.close()
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, workflowsoft_conn_id=CONN, max_instances=5,
                                             poll_interval=0.01, claims_owner="dag/run2/wait/-1", reclaim_after=0,
                                             max_offers=3)
    trigger.claims_store = store
    (event,) = events_of(trigger, 1)
    assert [i["IntegrationInstanceId"] for i in event["instances"]] == [7002] and event["parked"] == [7001]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.reclaimed") == 1
    assert total(metrics, "workflowsoft.instances.parked") == 1
    assert metrics["workflowsoft.claims.open.11"][-1] == (1.0, "g")  # 7002, claimed again by the trigger
    assert metrics["workflowsoft.claims.oldest_age.11"][-1][1] == "g"
    assert total(metrics, "workflowsoft.api.requests.poll") >= 1  # the async client is measured as before


def test_the_asset_watcher_sends_reclaimed_parked_and_the_oldest_claims_age(
    emulator: EmulatorServer, conn: str, statsd: StatsdReceiver
) -> None:
    import datetime as dt

    from tests.assets.test_event_driven import events_of, watcher

    own, shared = MemoryStore(), MemoryStore()
    emulator.create_instances(STEP, count=2)
    (first,) = events_of(watcher(own, shared, workflowsoft_conn_id=CONN, max_offers=1), 1)
    assert len(first["instances"]) == 2
    metrics = statsd.drain()
    assert metrics["workflowsoft.claims.open.11"][-1] == (2.0, "g")  # handed out, not completed yet
    assert "workflowsoft.instances.parked" not in metrics
    key = own.keys("")[0]
    record = own.get(key)
    for claim in record["claims"].values():  # the runs never completed them, and the lease is over
        claim["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600)).isoformat()
        claim["first_claimed_at"] = claim["claimed_at"]
    own.set(key, record)
    assert events_of(watcher(own, shared, workflowsoft_conn_id=CONN, max_offers=1), 1, max_sleeps=1) == []
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.parked") == 2  # handed out once: max_offers=1
    assert metrics["workflowsoft.claims.open.11"][-1] == (0.0, "g")
    # released by a person on call (a command the watcher applies): handed out again at once, counted as reclaimed,
    # open again, and as old as their first claim
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger

    target = watcher(own, shared, workflowsoft_conn_id=CONN)._claims().key
    ClaimsLedger(CONN, shared, owner="oncall").command(target, "release", [5001, 5002])
    (again,) = events_of(watcher(own, shared, workflowsoft_conn_id=CONN, max_offers=1), 1)
    assert sorted(i["IntegrationInstanceId"] for i in again["instances"] if i.get("reclaimed")) == [5001, 5002]
    metrics = statsd.drain()
    assert total(metrics, "workflowsoft.instances.reclaimed") == 2
    assert metrics["workflowsoft.claims.open.11"][-1] == (2.0, "g")
    assert metrics["workflowsoft.claims.oldest_age.11"][-1][0] >= 590  # since it was first claimed
