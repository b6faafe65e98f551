"""Poison instances are parked after ``max_offers``; a person releases (puts back), parks or forgets one instance
by id wherever it is claimed; a drain killed while polling leaves a trace the next run reports; the claims
records stay few. The worker engine and the watcher's trigger run against the emulator over loopback, their
records in memory stores."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import PARKED, ClaimsLedger, checked_max_offers
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from tests.assets.test_event_driven import events_of, watcher
from tests.conftest import fake_context, instance_status

CONN = "workflowsoft_default"
STEP = 11
POISON = 5002


@pytest.fixture
def client(emu_client: WorkflowsoftClient) -> WorkflowsoftClient:
    """Here ``client`` is the emulator's (tests/conftest.py's ``client`` is a mocked one)."""
    return emu_client


status = instance_status


def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    if instance["IntegrationInstanceId"] == POISON:
        raise ValueError("this instance's data is refused every time")
    return {"Venue code": f"V-{instance['IntegrationInstanceId']}"}


def batch_run(client: WorkflowsoftClient, store: MemoryStore, run: int, **kwargs: Any) -> dict[str, Any]:
    """One batch run (a new task instance) with a lease of 0: every earlier run's open claim is offered at once."""
    claims = ClaimsLedger(CONN, store, owner=f"burst/run{run}/enrich/-1")
    engine = WorkerEngine(client, enrich, integration_step_id=STEP, claims=claims, max_instances=10, max_workers=2,
                         reclaim_after=dt.timedelta(0), **kwargs)
    return engine.run()


def test_a_poison_instance_is_parked_after_max_offers_and_stays_parked(emu: EmulatorServer,
                                                                      client: WorkflowsoftClient) -> None:
    store = MemoryStore()
    emu.create_instances(STEP, count=3)  # handed out once each
    first = batch_run(client, store, 1, max_offers=3)
    assert first["succeeded"] == [5001, 5003] and [f["IntegrationInstanceId"] for f in first["failed"]] == [POISON]
    assert first["parked"] == []
    for run in (2, 3):  # offered again at once (lease 0), failing each time
        report = batch_run(client, store, run, max_offers=3)
        assert [f["IntegrationInstanceId"] for f in report["failed"]] == [POISON] and report["parked"] == []
    fourth = batch_run(client, store, 4, max_offers=3)  # handed out 3 times: parked, not offered
    assert fourth["processed"] == 0 and fourth["failed"] == [] and fourth["parked"] == [POISON]
    (entry,) = ClaimsLedger(CONN, store, owner="reader").list_claims(STEP)
    assert entry["integration_instance_id"] == POISON and entry["state"] == PARKED and entry["offers"] == 3
    assert "max_offers=3" in entry["reason"]
    for run in range(5, 9):  # never offered again, and the records stay one
        report = batch_run(client, store, run, max_offers=3)
        assert report["processed"] == 0 and report["parked"] == []
        assert len(store.keys(naming.claims_prefix(CONN))) == 1
    assert status(emu, POISON) == "handed_out"
    # Released: the next drain offers it at once, with its offers counted from 0 again.
    assert ClaimsLedger(CONN, store, owner="oncall").release([POISON]) == [POISON]
    again = batch_run(client, store, 9, max_offers=3)
    assert again["processed"] == 1 and [f["IntegrationInstanceId"] for f in again["failed"]] == [POISON]
    (entry,) = ClaimsLedger(CONN, store, owner="reader").list_claims(STEP)
    assert entry["state"] == "claimed" and entry["offers"] == 1


@pytest.mark.parametrize("never", [None, 0])
def test_max_offers_none_or_zero_never_parks(emu: EmulatorServer, client: WorkflowsoftClient, never: Any) -> None:
    store = MemoryStore()
    emu.create_instances(STEP, count=2)
    for run in range(1, 8):
        report = batch_run(client, store, run, max_offers=never)
        assert [f["IntegrationInstanceId"] for f in report["failed"]] == [POISON] and report["parked"] == []


@pytest.mark.parametrize("bad", [-1, "five", 2.5, True])
def test_a_bad_max_offers_is_named_before_anything_is_sent(bad: Any) -> None:
    with pytest.raises(WorkflowsoftInputError, match="max_offers"):
        WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, max_offers=bad)


@pytest.mark.parametrize(("given", "expected"), [("5", 5), (" 3 ", 3), (Decimal("4"), 4), (7, 7), ("0", None),
                                                 (None, None)])
def test_max_offers_is_read_by_the_one_id_reader(given: Any, expected: Any) -> None:
    # protocol.id_value: a numeric string (a rendered template) or a whole Decimal is a number.
    assert checked_max_offers(given) == expected


@pytest.mark.parametrize("bad", [Decimal("2.5"), "-1", " ", False])
def test_max_offers_refusals_name_the_argument_and_the_value(bad: Any) -> None:
    with pytest.raises(WorkflowsoftInputError, match="max_offers must be a whole number of 1 or more") as info:
        checked_max_offers(bad)
    assert str(info.value).endswith(f"got {bad!r}")


def test_the_sensor_reports_what_it_parked_in_xcom(emu: EmulatorServer) -> None:
    store = MemoryStore()
    emu.create_instances(STEP, count=1)
    ctx = fake_context("wait", run_id="run1")
    sensor = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, max_offers=2, deferrable=False,
                                           reclaim_after=0, ledger_store=store)
    assert [i["IntegrationInstanceId"] for i in sensor.poke(ctx).xcom_value] == [5001]  # type: ignore[arg-type]
    for run in ("run2", "run3"):  # each run's completion failed: offered again, then parked
        ctx = fake_context("wait", run_id=run)
        result = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, max_offers=2,
                                               deferrable=False, reclaim_after=0, ledger_store=store,
                                               notify_on_park={"assignee": "jane.roe@example.com"},
                                               ).poke(ctx)  # type: ignore[arg-type]
    assert result.xcom_value == [] and ctx["ti"].xcom["parked"] == [5001]
    (task,) = emu.snapshot()["tasks"]  # one task for a person, created by the run that parked it
    assert "1 instance(s) parked" in task["title"] and "5001" in task["description"]
    assert task["assigned_user_id"] == 2
    assert [(e["integration_instance_id"], e["state"]) for e in ClaimsLedger(CONN, store).list_claims()] == [
        (5001, PARKED)]


def test_release_park_and_forget_one_instance_in_the_variables_records() -> None:
    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="d/r1/wait/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": i} for i in (7001, 7002, 7003)])
    holder.close()
    oncall = ClaimsLedger(CONN, store, owner="oncall")
    assert oncall.park([7001, 9999]) == [7001]
    assert oncall.forget([7003]) == [7003]
    states = {e["integration_instance_id"]: e["state"] for e in oncall.list_claims()}
    assert states == {7001: PARKED, 7002: "claimed"}
    # within the lease nothing is offered, the parked one is left alone for good
    offered, skip = ClaimsLedger(CONN, store, owner="d/r2/wait/-1").prepare_drain(STEP, dt.timedelta(hours=1), 10)
    assert offered == [] and sorted(skip) == [7001, 7002]
    assert oncall.release([7001]) == [7001]  # put back: offered at once, whatever the lease
    offered, _ = ClaimsLedger(CONN, store, owner="d/r3/wait/-1").prepare_drain(STEP, dt.timedelta(hours=1), 10)
    assert [i["IntegrationInstanceId"] for i in offered] == [7001] and offered[0]["reclaimed"]
    # taken by run 3 (its lease starts again): the next run leaves it alone
    offered, skip = ClaimsLedger(CONN, store, owner="d/r4/wait/-1").prepare_drain(STEP, dt.timedelta(hours=1), 10)
    assert offered == [] and 7001 in skip


def test_a_released_instance_is_offered_at_once_even_when_max_offers_is_one() -> None:
    """Releasing puts an instance back to be offered again, with its offers counted from 0: it is offered, not
    parked again by the next drain (whatever ``max_offers``), and parked again only after failing once more."""
    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="d/r1/wait/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": 7001}])
    holder.close()
    lease = dt.timedelta(0)
    second = ClaimsLedger(CONN, store, owner="d/r2/wait/-1")
    assert second.prepare_drain(STEP, lease, 10, max_offers=1)[0] == [] and second.parked == [7001]
    assert ClaimsLedger(CONN, store, owner="oncall").release([7001]) == [7001]
    third = ClaimsLedger(CONN, store, owner="d/r3/wait/-1")
    offered, _ = third.prepare_drain(STEP, lease, 10, max_offers=1)
    assert [i["IntegrationInstanceId"] for i in offered] == [7001] and third.parked == []
    third.claim(STEP, offered)  # handed out once more, and not completed
    third.close()
    fourth = ClaimsLedger(CONN, store, owner="d/r4/wait/-1")
    assert fourth.prepare_drain(STEP, lease, 10, max_offers=1)[0] == [] and fourth.parked == [7001]


def test_the_watcher_applies_a_release_or_park_asked_from_outside(emu: EmulatorServer) -> None:
    """A running watcher rewrites its record each round, so nobody else writes it: a person's decision is a
    command (a Variable) that the watcher applies at its next round."""
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(STEP, count=2)
    (first,) = events_of(watcher(own, shared), 1)
    assert [i["IntegrationInstanceId"] for i in first["instances"]] == [5001, 5002]
    trigger = watcher(own, shared)
    target = trigger._claims().key
    oncall = ClaimsLedger(CONN, shared, owner="oncall")
    oncall.command(target, "park", [5001])
    oncall.command(target, "release", [5002])
    (again,) = events_of(trigger, 1)  # its next round: 5002 handed out at once (no lease to wait for)
    assert again["instances"] == [{"IntegrationInstanceId": 5002, "ProcessInstanceId": first["instances"][1][
        "ProcessInstanceId"], "reclaimed": True}]
    record = own.get(target)
    assert sorted(record["parked"]) == ["5001"] and sorted(record["claims"]) == ["5002"]
    assert shared.keys(naming.claims_command_prefix(CONN)) == []  # applied, then deleted
    # a lease later the parked one is still not handed out
    record["claims"]["5002"]["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
    own.set(target, record)
    (third,) = events_of(watcher(own, shared), 1)
    assert [i["IntegrationInstanceId"] for i in third["instances"]] == [5002]


def test_the_watcher_parks_an_instance_its_runs_never_complete(emu: EmulatorServer) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(STEP, count=1)
    events_of(watcher(own, shared, max_offers=2), 1)
    key = own.keys("")[0]

    def lease_over() -> None:
        record = own.get(key)
        for claim in record["claims"].values():
            claim["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
        own.set(key, record)

    lease_over()
    (again,) = events_of(watcher(own, shared, max_offers=2), 1)  # offer 2
    assert again["instances"][0]["reclaimed"]
    lease_over()
    assert events_of(watcher(own, shared, max_offers=2), 1, max_sleeps=2) == []  # parked instead of offer 3
    assert sorted(own.get(key)["parked"]) == ["5001"]


def test_a_drain_killed_while_polling_is_reported_by_the_next_run(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    owner = "burst/run1/enrich/-1"
    dying = ClaimsLedger(CONN, store, owner=owner)
    dying.prepare_drain(STEP, dt.timedelta(hours=1), 10)
    dying.start_polling(STEP, 16)
    dying.claim(STEP, [{"IntegrationInstanceId": 7001}])
    # ... killed here: answers in flight are lost on a server that hands them out once
    retry = ClaimsLedger(CONN, store, owner=owner)  # the task's next try
    offered, _ = retry.prepare_drain(STEP, dt.timedelta(hours=1), 10)
    assert [i["IntegrationInstanceId"] for i in offered] == [7001]
    (trace,) = retry.interrupted
    assert trace["step"] == STEP and trace["up_to"] == 16 and trace["owner"] == owner and trace["since"]
    assert "interrupted while polling" in caplog.text and "up to 16 instance(s)" in caplog.text
    assert "polling" not in store.get(retry.key)  # reported once
    assert ClaimsLedger(CONN, store, owner=owner).prepare_drain(STEP, dt.timedelta(hours=1), 10) and True
    # a clean drain leaves no trace
    clean = ClaimsLedger(CONN, store, owner="burst/run2/enrich/-1")
    clean.start_polling(STEP, 1)
    clean.stop_polling()
    assert ClaimsLedger(CONN, store, owner="burst/run3/enrich/-1").prepare_drain(STEP, None, 10) is not None
    assert ClaimsLedger(CONN, store, owner="x").interrupted == []


def test_sensor_runs_with_mapped_completions_leave_few_records() -> None:
    """A user saw 24 records after a few runs: every mapped completion's done mark was kept a lease in its own
    record. The next reader carries such marks into its own record: after N runs of k instances, the k
    completion records of the last run and one carrier remain."""
    store = MemoryStore()
    lease = dt.timedelta(hours=1)
    next_id = 7000
    for run in range(1, 6):
        sensor = ClaimsLedger(CONN, store, owner=f"enrich/run{run}/wait/-1")
        sensor.prepare_drain(STEP, lease, 6)
        batch = [{"IntegrationInstanceId": next_id + i} for i in range(6)]
        next_id += 6
        sensor.claim(STEP, batch)
        sensor.close()
        for index, instance in enumerate(batch):
            completion = ClaimsLedger(CONN, store, owner=f"enrich/run{run}/complete/{index}")
            completion.mark_done([instance["IntegrationInstanceId"]], write=False)
            completion.close()
        assert len(store.keys(naming.claims_prefix(CONN))) <= 6 + 2
    reader = ClaimsLedger(CONN, store, owner="enrich/run6/wait/-1")
    assert reader.prepare_drain(STEP, lease, 6) == ([], [])
    assert len(store.keys(naming.claims_prefix(CONN))) == 1  # one carrier, holding the done marks of the lease
    later = ClaimsLedger(CONN, store, owner="enrich/run7/wait/-1",
                         clock=lambda: dt.datetime.now(dt.UTC) + 2 * lease)
    later.prepare_drain(STEP, lease, 6)
    assert store.keys(naming.claims_prefix(CONN)) == []


def test_watcher_runs_leave_at_most_the_last_runs_record() -> None:
    """The asset watcher's own record is in its Asset's state store; each run (a batch worker given the event's
    instances) leaves its done marks in one Variable. The watcher is the reader they were kept for: its next
    round resolves its claims and deletes the closed run's record (0.4.0 kept each for a lease: as many
    Variables as runs in the last hour). A run still writing is left alone until it closes."""
    own, shared = MemoryStore(), MemoryStore()
    lease = dt.timedelta(hours=1)

    def watcher_ledger() -> ClaimsLedger:
        return ClaimsLedger(CONN, shared, owner=naming.watcher_owner("workflowsoft://c/integration-steps/11"),
                            own_store=own)

    for run in range(1, 5):
        watching = watcher_ledger()
        assert watching.prepare_drain(STEP, lease, 3, own_at_once=False) == ([], [])  # the last run's: resolved
        batch = [{"IntegrationInstanceId": 7000 + 3 * run + i} for i in range(3)]
        watching.claim(STEP, batch)
        worker = ClaimsLedger(CONN, shared, owner=f"d/run{run}/work/-1")
        worker.claim(STEP, [{**i, "shared": True} for i in batch])
        worker.mark_done([i["IntegrationInstanceId"] for i in batch[:2]])  # written while the run goes on
        still_running = watcher_ledger()
        held = batch[2]["IntegrationInstanceId"]
        assert still_running.prepare_drain(STEP, lease, 3, own_at_once=False) == ([], [held])
        assert len(shared.keys(naming.claims_prefix(CONN))) == 1  # the running run's record is left alone
        worker.mark_done([batch[2]["IntegrationInstanceId"]], write=False)
        worker.close()
        assert len(shared.keys(naming.claims_prefix(CONN))) == 1  # this run's, until the watcher's next round
    watcher_ledger().prepare_drain(STEP, lease, 3, own_at_once=False)
    assert shared.keys(naming.claims_prefix(CONN)) == []
    assert [e for e in watcher_ledger().list_claims() if e["state"] == "claimed"] == []


def test_the_deferred_trigger_parks_in_the_sensor_record_and_its_event_says_so(emu: EmulatorServer) -> None:
    from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger

    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": 7001, "offers": 2}])  # handed out 3 times already
    holder.close()
    emu.create_instances(STEP, count=1)
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, max_instances=5, poll_interval=0.01,
                                             claims_owner="dag/run2/wait/-1", reclaim_after=0, max_offers=3)
    trigger.claims_store = store
    (event,) = events_of(trigger, 1)
    assert [i["IntegrationInstanceId"] for i in event["instances"]] == [5001] and event["parked"] == [7001]
    sensor = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, max_offers=3, ledger_store=store)
    ctx = fake_context("wait", run_id="run2")
    sensor._hook = None
    returned = sensor.execute_complete(ctx, event)  # type: ignore[arg-type]
    assert [i["IntegrationInstanceId"] for i in returned] == [5001] and ctx["ti"].xcom["parked"] == [7001]
    assert trigger.serialize()[1]["max_offers"] == 3


def test_the_command_line_lists_and_decides_in_both_kinds_of_records(emu: EmulatorServer) -> None:
    """``workflowsoft-claims`` on the Variables records (rewritten at once) and a watcher's record (a command the
    running watcher applies at its next round); the metadata database replaced by memory stores."""
    import io
    import json

    from airflow_provider_workflowsoft.claims_cli import run

    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(STEP, count=2)
    events_of(watcher(own, shared), 1)  # the watcher holds 5001 and 5002
    sensor = ClaimsLedger(CONN, shared, owner="d/r1/wait/-1")
    sensor.claim(STEP, [{"IntegrationInstanceId": 7001}])
    sensor.close()

    def cli(*argv: str) -> tuple[int, str]:
        watchers = {key: {**own.get(key), "asset_uri": "workflowsoft://workflowsoft_default/integration-steps/11"}
                    for key in own.keys("")}
        out = io.StringIO()
        return run(argv, store=shared, watchers=watchers, out=out), out.getvalue()

    code, text = cli("list", "--json")
    entries = json.loads(text)
    assert code == 0 and [(e["integration_instance_id"], e.get("asset_uri") is not None) for e in entries] == [
        (5001, True), (5002, True), (7001, False)]
    code, text = cli("park", "5001", "7001")
    assert code == 0 and "park: 7001 (claims records in the Variables)" in text and "asked of the asset watcher" in text
    assert ClaimsLedger(CONN, shared).list_claims()[0]["state"] == PARKED  # 7001 at once
    events_of(watcher(own, shared), 1, max_sleeps=1)  # the watcher's next round applies its command
    code, text = cli("list")
    assert "5001\tparked" in text and "7001\tparked" in text and "5002\tclaimed" in text
    code, text = cli("release", "5001")
    (event,) = events_of(watcher(own, shared), 1)  # released: handed out again at once
    assert [i["IntegrationInstanceId"] for i in event["instances"]] == [5001]
    code, text = cli("forget", "424242")
    assert code == 1 and "not claimed anywhere" in text
    with pytest.raises(SystemExit, match="whole numbers"):
        cli("release", "five")


def test_the_batch_worker_tells_a_person_about_what_it_parked(emu: EmulatorServer) -> None:
    from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
    from tests.conftest import FakeTI

    store = MemoryStore()
    emu.create_instances(STEP, count=2)
    notify = {"title": "Enrichment needs a person", "assignee": "jane.roe@example.com"}

    def run(run_id: str) -> tuple[dict[str, Any] | None, BaseException | None]:
        ti = FakeTI("enrich", dag_id="burst", run_id=run_id)
        op = WorkflowsoftIntegrationWorkerOperator(task_id="enrich", python_callable=enrich, integration_step_id=STEP,
                                                   reclaim_after=dt.timedelta(0), max_offers=1,
                                                   notify_on_failure=notify, ledger_store=store)
        try:
            return op.execute({"ti": ti}), None  # type: ignore[arg-type]
        except Exception as exc:
            return ti.xcom.get("return_value"), exc

    report, error = run("run1")  # 5002 fails: a task for its failure
    assert error is not None and report is not None and report["parked"] == []
    report, error = run("run2")  # handed out once (max_offers=1): parked, the run succeeds and says so
    assert error is None and report is not None and report["parked"] == [POISON]
    tasks = emu.snapshot()["tasks"]
    assert len(tasks) == 2 and tasks[1]["title"] == "Enrichment needs a person"
    assert "Parked integration instances" in tasks[1]["description"] and str(POISON) in tasks[1]["description"]
    assert report["notification"]["Id"] == tasks[1]["id"]


def test_the_claims_operators_reach_the_watcher_of_their_inlets(emu: EmulatorServer) -> None:
    """Given the step's Asset in ``inlets``, the operators list the watcher's claims (from its Asset's state store)
    and park or release one through a command the running watcher applies at its next round."""
    from types import SimpleNamespace

    from airflow_provider_workflowsoft.operators.workflowsoft import (
        WorkflowsoftListClaimsOperator,
        WorkflowsoftParkClaimsOperator,
        WorkflowsoftReleaseClaimsOperator,
    )

    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(STEP, count=1)
    events_of(watcher(own, shared), 1)
    asset = SimpleNamespace(uri="workflowsoft://workflowsoft_default/integration-steps/11")

    class Accessors:  # context["asset_state_store"]: one accessor per inlet Asset
        def __getitem__(self, key: Any) -> Any:
            assert key is asset
            return SimpleNamespace(get=lambda k, default=None: own.get(k))

    def ctx() -> dict[str, Any]:
        return {**fake_context("oncall"), "asset_state_store": Accessors()}

    listed = WorkflowsoftListClaimsOperator(task_id="list", inlets=[asset], ledger_store=shared).execute(ctx())
    assert [(e["integration_instance_id"], e["state"], e["asset_uri"]) for e in listed] == [(5001, "claimed",
                                                                                            asset.uri)]
    parked = WorkflowsoftParkClaimsOperator(task_id="park", instance_ids=[5001], inlets=[asset],
                                            ledger_store=shared).execute(ctx())
    assert [e["integration_instance_id"] for e in parked] == [5001]
    events_of(watcher(own, shared), 1, max_sleeps=1)  # the watcher's next round applies it
    listed = WorkflowsoftListClaimsOperator(task_id="list", inlets=[asset], ledger_store=shared).execute(ctx())
    assert [(e["integration_instance_id"], e["state"]) for e in listed] == [(5001, PARKED)]
    WorkflowsoftReleaseClaimsOperator(task_id="release", instance_ids="5001", inlets=[asset],
                                      ledger_store=shared).execute(ctx())
    (event,) = events_of(watcher(own, shared), 1)
    assert [i["IntegrationInstanceId"] for i in event["instances"]] == [5001] and event["instances"][0]["reclaimed"]


@pytest.mark.parametrize("bad", [{"asignee": "ops@example.com"}, ["ops@example.com"], 42])
def test_a_misspelt_or_malformed_notice_is_refused_before_anything_is_sent(bad: Any) -> None:
    """``notify_on_park`` / ``notify_on_failure`` with a misspelt key would create an unassigned task (or fail
    only when something is parked, hours later): refused when the DAG is parsed, naming the argument."""
    from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator

    with pytest.raises(WorkflowsoftInputError, match=r"notify_on_park (has unknown key\(s\) 'asignee'|must be a dict)"):
        WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, notify_on_park=bad)
    with pytest.raises(WorkflowsoftInputError, match=r"notify_on_failure (has unknown key|must be a dict)"):
        WorkflowsoftIntegrationWorkerOperator(task_id="work", python_callable=enrich, integration_step_id=STEP,
                                              notify_on_failure=bad)
    fine = {"title": "Parked", "assignee": "ops@example.com", "description": "see", "on_behalf_of": "ops"}
    assert WorkflowsoftIntegrationSensor(task_id="wait2", integration_step_id=STEP, notify_on_park=fine).notify_on_park


def test_the_command_line_takes_the_connection_before_or_after_the_command() -> None:
    """``workflowsoft-claims --conn X list`` and ``workflowsoft-claims list --conn X`` both read X's claims."""
    import io

    from airflow_provider_workflowsoft.claims_cli import run

    store = MemoryStore()
    other = ClaimsLedger("wfs_other", store, owner="d/r1/wait/-1")
    other.claim(STEP, [{"IntegrationInstanceId": 8001}])
    other.close()

    def listed(*argv: str) -> str:
        out = io.StringIO()
        assert run(argv, store=store, watchers={}, out=out) == 0
        return out.getvalue()

    assert "8001" in listed("--conn", "wfs_other", "list")
    assert "8001" in listed("list", "--conn", "wfs_other")
    assert "8001" not in listed("list")  # the default connection has no claims
    assert "8001" in listed("--conn", "wfs_other", "list", "--step", str(STEP))


def test_an_instance_delivered_through_the_deferred_trigger_counts_as_one_offer(emu: EmulatorServer) -> None:
    """The trigger claims in the sensor's record before its event; the resumed sensor must not claim the same
    hand-over again (that counted two offers for one delivery and parked instances one failure early)."""
    from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger

    store = MemoryStore()
    emu.create_instances(STEP, count=1)
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, max_instances=5, poll_interval=0.01,
                                             claims_owner="dag/run2/wait/-1", max_offers=2)
    trigger.claims_store = store
    (event,) = events_of(trigger, 1)
    sensor = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, max_offers=2, ledger_store=store)
    sensor._hook = None
    sensor.execute_complete(fake_context("wait", run_id="run2"), event)  # type: ignore[arg-type]
    (claim,) = ClaimsLedger(CONN, store).list_claims()
    assert (claim["integration_instance_id"], claim["offers"]) == (5001, 1)


def test_the_re_offer_log_counts_a_released_instance_from_its_first_offer(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    holder = ClaimsLedger(CONN, store, owner="d/r1/work/-1")
    holder.claim(STEP, [{"IntegrationInstanceId": 7001, "offers": 3}])
    holder.close()
    ClaimsLedger(CONN, store, owner="workflowsoft-claims").release([7001])
    with caplog.at_level("WARNING"):
        offered, _ = ClaimsLedger(CONN, store, owner="d/r2/work/-1").prepare_drain(
            STEP, dt.timedelta(hours=1), 5, max_offers=5)
    assert [i["IntegrationInstanceId"] for i in offered] == [7001]
    assert "(offer 1 of 5)" in caplog.text, caplog.text
