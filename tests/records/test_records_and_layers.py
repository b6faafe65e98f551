"""Guarantees of the restructured package: claims other runs hold are respected by the worker engine, one
completion sequence, one meaning of ``on_behalf_of``, an Airflow-free API layer, a trigger that reads its
connection the async way, and few claims records that are tidied."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftStartProcessOperator,
    WorkflowsoftUpdateFieldsOperator,
)
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import CLAIMED, DONE, ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from tests.conftest import fake_context, instance_status

CONN = "workflowsoft_default"
STEP = 11
LEASE = dt.timedelta(hours=1)
NOW = dt.datetime.now(dt.UTC)


def at(moment: dt.datetime) -> Any:
    return lambda: moment


@pytest.fixture
def client(emu_client: WorkflowsoftClient) -> WorkflowsoftClient:
    """Here ``client`` is the emulator's (tests/conftest.py's ``client`` is a mocked one)."""
    return emu_client


status = instance_status


def never_called(fields: dict[str, Any]) -> None:
    raise AssertionError("an instance another run holds was processed")


# -- a) the worker engine leaves alone what other runs hold within their lease --------------------------


def test_batch_engine_does_not_take_an_instance_another_run_holds(emu, client) -> None:
    emu.update_settings(poll_semantics="until-completed")  # the server repeats 5001 until it is completed
    (instance,) = emu.create_instances(STEP)
    store = MemoryStore()
    run_a = ClaimsLedger(CONN, store, owner="dag/runA/wait/-1")
    run_a.claim(STEP, [client.poll_new_integration(STEP)])  # run A's sensor received it

    engine = WorkerEngine(client, never_called, integration_step_id=STEP, reclaim_after=LEASE,
                         claims=ClaimsLedger(CONN, store, owner="dag/runB/work/-1"))
    report = engine.run()

    assert report["processed"] == 0 and report["received"] == 0
    assert status(emu, instance["IntegrationInstanceId"]) == "handed_out"
    (claim,) = ClaimsLedger(CONN, store, owner="reader").list_claims(STEP)
    assert claim["owner"] == "dag/runA/wait/-1" and claim["state"] == CLAIMED


def test_batch_engine_respects_a_takeover_within_its_lease(emu, client) -> None:
    # Run A's claim is stale, but run A2 took 5001 over an instant ago: the lease runs from that claim.
    emu.update_settings(poll_semantics="until-completed")
    (instance,) = emu.create_instances(STEP)
    store = MemoryStore()
    run_a = ClaimsLedger(CONN, store, owner="dag/runA/work/-1", clock=at(NOW - 2 * LEASE))
    run_a.claim(STEP, [client.poll_new_integration(STEP)])
    run_a.clock = at(NOW)
    run_a.claim(12, [{"IntegrationInstanceId": 7001}])  # run A is alive: its record is fresh
    taken, _ = ClaimsLedger(CONN, store, owner="dag/runA2/work/-1", clock=at(NOW)).prepare_drain(STEP, LEASE, 5)
    assert [i["IntegrationInstanceId"] for i in taken] == [instance["IntegrationInstanceId"]]

    engine = WorkerEngine(client, never_called, integration_step_id=STEP, reclaim_after=LEASE,
                         claims=ClaimsLedger(CONN, store, owner="dag/runB/work/-1", clock=at(NOW)))
    report = engine.run()
    assert report["processed"] == 0 and report["failed"] == []
    assert status(emu, instance["IntegrationInstanceId"]) == "handed_out"


# -- b) one completion sequence -------------------------------------------------------------------------


def test_reclaimed_batch_instance_refused_as_already_completed_is_a_success(emu, client) -> None:
    emu.create_instances(STEP, count=2, values={"Venue code": "V1"})
    store = MemoryStore()
    dead = ClaimsLedger(CONN, store, owner="dag/runA/work/-1", clock=at(NOW - 2 * LEASE))
    first, second = client.poll_new_integration(STEP), client.poll_new_integration(STEP)
    dead.claim(STEP, [first, second])
    for iid in (first["IntegrationInstanceId"], second["IntegrationInstanceId"]):
        emu.state.complete(iid, {"Action": "Complete", "CustomAction": "__AUTO__"}, "system")  # answers lost
    emu.clear_request_log()

    engine = WorkerEngine(client, lambda fields: {"Attendees": 5}, integration_step_id=STEP, reclaim_after=LEASE,
                         claims=ClaimsLedger(CONN, store, owner="dag/runB/work/-1"), max_instances=1)
    report = engine.run()
    assert report["failed"] == [] and report["succeeded"] == [first["IntegrationInstanceId"]]
    assert report["results"] == {str(first["IntegrationInstanceId"]): {}}
    refused = [r for r in emu.request_log() if r["method"] == "POST"]
    assert refused and all(r["status"] == 409 for r in refused)  # the write was refused, yet it counts

    # The same answer through CompleteStepOperator, given the re-offered instance (as a sensor hands it over)
    result = WorkflowsoftCompleteStepOperator(
        task_id="c", integration_instance_id={**second, "reclaimed": True}, fields={"Attendees": 5},
        ledger_store=store,
    ).execute(fake_context("c"))
    assert result["completed"] is True and result["already_completed"] is True


def test_process_one_reports_already_completed(emu, client) -> None:
    (instance,) = emu.create_instances(STEP, values={"Venue code": "V1"})
    iid = instance["IntegrationInstanceId"]
    emu.state.complete(iid, {"Action": "Complete", "CustomAction": "__AUTO__"}, "system")
    engine = WorkerEngine(client, lambda fields: {"Attendees": 5}, integration_step_id=STEP)
    outcome = engine.process_one({"IntegrationInstanceId": iid, "reclaimed": True}, already_completed_ok=True)
    assert outcome["already_completed"] is True
    with pytest.raises(Exception, match="already completed"):  # a first attempt must not hide it
        engine.process_one({"IntegrationInstanceId": iid})


# -- c) on_behalf_of: one meaning ------------------------------------------------------------------------


def test_update_fields_on_behalf_of_an_email_sends_the_user_id(emu) -> None:
    (instance,) = emu.create_instances(STEP)
    WorkflowsoftUpdateFieldsOperator(task_id="u", integration_instance_id=instance, fields={"Attendees": 3},
                                     on_behalf_of="john.doe@example.com").execute(fake_context("u"))
    WorkflowsoftStartProcessOperator(task_id="s", process_diagram_id=3, on_behalf_of="john.doe@example.com",
                                     ledger_store=MemoryStore()).execute(fake_context("s"))
    WorkflowsoftUpdateFieldsOperator(task_id="u2", integration_instance_id=instance, fields={"Attendees": 4},
                                     on_behalf_of="system").execute(fake_context("u2"))
    sent = [r["on_behalf_of"] for r in emu.request_log() if r["method"] == "POST"]
    assert sent == ["1", "1", "system"]  # the user's id for both operators; "system" passed through


# -- d) the API layer needs no Airflow ---------------------------------------------------------------------


def test_api_client_and_fields_import_without_airflow() -> None:
    script = textwrap.dedent("""
        import sys

        class NoAirflow:
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ImportError("airflow is blocked: " + name)
                return None

        sys.meta_path.insert(0, NoAirflow())
        from airflow_provider_workflowsoft.api import client, fields
        from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
        assert client.WorkflowsoftClient and fields.Field
        assert not [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- e) the trigger reads its connection the async way ------------------------------------------------------


def test_trigger_reads_the_connection_with_the_async_helpers(emu, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_workflowsoft.hooks import workflowsoft as hook_module
    from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger

    read: list[str] = []

    class AsyncOnlyConnection:
        conn_id, host, schema, port, login, password = CONN, emu.base_url, None, None, None, "demo-token"

        @property
        def extra_dejson(self) -> dict[str, Any]:
            raise AssertionError("the extras were read synchronously on the event loop")

        async def aextra_dejson(self) -> dict[str, Any]:
            read.append("extras")
            return {"max_retries": 0}

    async def aget_connection(conn_id: str) -> Any:
        read.append(conn_id)
        return AsyncOnlyConnection()

    def no_sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the connection was read synchronously on the event loop")

    monkeypatch.setattr(hook_module, "aget_connection", aget_connection)
    monkeypatch.setattr(hook_module.BaseHook, "get_connection", no_sync)
    emu.create_instances(STEP)

    async def first_event() -> dict[str, Any]:
        agen = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, poll_interval=0.01).run()
        try:
            return (await asyncio.wait_for(agen.__anext__(), 30)).payload
        finally:
            await agen.aclose()

    event = asyncio.run(first_event())
    assert event["status"] == "success" and [i["IntegrationInstanceId"] for i in event["instances"]] == [5001]
    assert read == [CONN, "extras"]


# -- f) records: few, tidied, and nothing lost to a kill ----------------------------------------------------


class KeyWatchingStore(MemoryStore):
    """Remembers every claims record ever written."""

    def __init__(self) -> None:
        super().__init__()
        self.written: set[str] = set()

    def set(self, key: str, value: Any) -> None:
        self.written.add(key)
        super().set(key, value)


def test_a_batch_run_writes_one_record_and_leaves_none(emu, client) -> None:
    n = 30
    emu.create_instances(STEP, count=n)
    store = KeyWatchingStore()
    engine = WorkerEngine(client, lambda fields: {"Venue code": "V"}, integration_step_id=STEP, max_instances=n,
                         claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"), max_workers=4)
    report = engine.run()
    assert len(report["succeeded"]) == n
    assert len(store.written) <= 1  # one Variable-like record for the whole run
    assert store.keys(naming.claims_prefix(CONN)) == []  # and none left after success


def test_a_killed_runs_claims_are_reoffered_after_the_lease_and_at_once_to_its_retry() -> None:
    store = MemoryStore()
    killed = ClaimsLedger(CONN, store, owner="dag/run1/work/-1", clock=at(NOW))
    killed.claim(STEP, [{"IntegrationInstanceId": 5001}, {"IntegrationInstanceId": 5002}])  # then: killed

    def offered(owner: str, when: dt.datetime) -> list[Any]:
        got, _skip = ClaimsLedger(CONN, store, owner=owner, clock=at(when)).prepare_drain(STEP, LEASE, 10)
        return [i["IntegrationInstanceId"] for i in got]

    assert offered("dag/run2/work/-1", NOW + LEASE / 2) == []  # within the lease: left alone
    assert offered("dag/run1/work/-1", NOW + LEASE / 2) == [5001, 5002]  # its own retry: at once
    assert offered("dag/run2/work/-1", NOW + LEASE / 2 + LEASE) == [5001, 5002]  # after the lease: anyone


def test_done_marks_of_a_mapped_completion_resolve_the_sensor_claim_and_are_tidied() -> None:
    store = MemoryStore()
    sensor = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")
    sensor.claim(STEP, [{"IntegrationInstanceId": 5001}, {"IntegrationInstanceId": 5002}])
    sensor.close()
    for index, iid in enumerate((5001, 5002)):
        mapped = ClaimsLedger(CONN, store, owner=naming.owner_name("dag", "run1", "complete", index))
        mapped.mark_done([iid])
        mapped.close()
    reader = ClaimsLedger(CONN, store, owner="reader")
    assert reader.list_claims(STEP) == []  # resolved: nothing is open
    assert {e["state"] for e in reader.list_claims(STEP, include_done=True)} == {DONE}
    assert len(store.keys(naming.claims_prefix(CONN))) == 3
    offered, skip = ClaimsLedger(CONN, store, owner="dag/run2/wait/-1").prepare_drain(STEP, dt.timedelta(0), 10)
    assert offered == [] and skip == []
    assert store.keys(naming.claims_prefix(CONN)) == []  # the sensor's and the completions' records are gone


@pytest.mark.parametrize(("max_unclaimed", "bound"), [(None, 2 * 4), (3, 3), (1, 1)])
def test_a_slow_claims_store_bounds_what_is_handed_out_unclaimed(emu, client, max_unclaimed, bound) -> None:
    # Group commit must not let pollers run ahead of the claim writes: at any moment, answers received
    # but not yet durably claimed (plus polls in flight) never exceed max_unclaimed (default 2 x pollers):
    # the most a hard kill can lose against a server that hands an instance out once.
    import threading
    import time

    emu.create_instances(STEP, count=40)
    lock = threading.Lock()
    seen = {"answers": 0, "in_flight": 0, "worst": 0}
    claimed: set[str] = set()

    class SlowStore(MemoryStore):
        def set(self, key: str, value: Any) -> None:
            time.sleep(0.05)
            super().set(key, value)
            with lock:
                claimed.update(value.get("claims", {}))

    class CountingPolls:
        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def poll_new_integration(self, step: Any) -> Any:
            with lock:
                seen["in_flight"] += 1
                seen["worst"] = max(seen["worst"], seen["answers"] - len(claimed) + seen["in_flight"])
            answer = client.poll_new_integration(step)
            with lock:
                seen["in_flight"] -= 1
                seen["answers"] += answer is not None
            return answer

    engine = WorkerEngine(CountingPolls(), lambda fields: {"Venue code": "V"}, integration_step_id=STEP,
                         max_instances=40, max_workers=4, claims=ClaimsLedger(CONN, SlowStore(), owner="o"),
                         max_unclaimed=max_unclaimed)
    report = engine.run()
    assert len(report["succeeded"]) == 40
    assert seen["worst"] <= bound
    assert seen["worst"] == bound or max_unclaimed is None  # the bound is used, not only respected


def test_max_unclaimed_must_be_a_whole_number_of_one_or_more(client) -> None:
    from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError

    for bad in (0, -1, 1.5, True, "2"):
        expected = f"max_unclaimed must be a whole number of 1 or more, got {bad!r}"
        with pytest.raises(WorkflowsoftInputError, match=expected):
            WorkerEngine(client, lambda fields: None, integration_step_id=STEP,
                        max_unclaimed=bad)  # type: ignore[arg-type]


# -- g) versions: one module knows them ---------------------------------------------------------------------


#: Who may import Airflow, and what (docs/architecture.md, "Who imports Airflow"). Every module may take
#: Airflow's names from common.compat (the official providers' way); other Airflow imports are version- or
#: process-specific and live in the one module whose concern they are. api/ and the emulator import none.
AIRFLOW_IMPORTS: dict[str, set[str]] = {
    "version_compat.py": {"airflow", "airflow.sdk"},
    "triggers/workflowsoft.py": {"airflow.triggers.base"},
    "decorators/workflowsoft.py": {"airflow.sdk.bases.decorator", "airflow.decorators.base"},
    "records/stores.py": {"airflow.models.variable", "airflow.models.asset", "airflow.models.asset_state_store",
                          "airflow.utils.session"},
    "masking.py": {"airflow.sdk._shared.secrets_masker.secrets_masker", "airflow.sdk.log"},
    "hooks/workflowsoft.py": {"airflow.sdk.execution_time"},
    "lineage.py": {"airflow.providers.openlineage.extractors"},
    "queues/workflowsoft.py": {"airflow.providers.common.messaging.providers.base_provider"},
    "deprecation.py": {"airflow", "airflow.exceptions"},
}


def test_who_imports_airflow() -> None:
    """Airflow reaches the package through common.compat, plus the few version-specific imports each in the
    one module that owns them; the API layer and the emulator import nothing from Airflow."""
    import ast
    from pathlib import Path

    import airflow_provider_workflowsoft

    package = Path(airflow_provider_workflowsoft.__file__).parent
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        free_of_airflow = name.startswith(("api/", "emulator/"))
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                       else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for module in modules:
                if not (module == "airflow" or module.startswith("airflow.")):
                    continue
                if free_of_airflow or not (module.startswith("airflow.providers.common.compat")
                                           or module in AIRFLOW_IMPORTS.get(name, ())):
                    found.append(f"{name}:{node.lineno} imports {module}")
    assert found == []


def test_version_compat_holds_version_facts_only() -> None:
    """version_compat has the flags, the running version and the names it re-exports: no behaviour."""
    import inspect

    from airflow_provider_workflowsoft import version_compat

    functions = sorted(name for name, value in vars(version_compat).items()
                       if inspect.isfunction(value) and value.__module__ == version_compat.__name__)
    assert functions == ["_airflow_version", "airflow_version", "asset_classes"]
    assert not hasattr(version_compat, "AIRFLOW_V_3_4_PLUS")
    assert "__getattr__" not in vars(version_compat)


class FakeTaskStateStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_create_records_in_the_task_state_store_from_3_3_else_in_variables() -> None:
    from airflow_provider_workflowsoft.records.creates import TASK_STATE_KEY, create_store_for
    from airflow_provider_workflowsoft.records.stores import TaskStateStore, VariableStore
    from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS

    ctx = fake_context("start", run_id="manual__1", dag_id="d")
    store, key = create_store_for(ctx)
    assert (type(store), key) == (VariableStore, "workflowsoft.create.d.manual__1.start.-1")
    assert "airflow variables delete workflowsoft.create.d.manual__1.start.-1" in store.describe(key)

    ctx["task_state_store"] = FakeTaskStateStore()
    store, key = create_store_for(ctx)
    if AIRFLOW_V_3_3_PLUS:
        assert (type(store), key) == (TaskStateStore, TASK_STATE_KEY)
        assert "/api/v2/dags/d/dagRuns/manual__1/taskInstances/start/state-store" in store.describe(key)
    else:  # no such store before 3.3, whatever the context holds
        assert (type(store), key) == (VariableStore, "workflowsoft.create.d.manual__1.start.-1")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("max_unclaimed", [None, 1])
def test_a_drain_ending_at_its_limit_releases_every_waiting_poller(emu, client, max_unclaimed) -> None:
    # 16 pollers, most of them waiting for room, and a drain that ends at max_instances (not at an empty
    # answer): every poller must be told, or the run never ends.
    emu.create_instances(STEP, count=60)
    engine = WorkerEngine(client, lambda fields: {"Venue code": "V"}, integration_step_id=STEP, max_instances=40,
                         max_workers=16, claims=ClaimsLedger(CONN, MemoryStore(), owner="o"),
                         max_unclaimed=max_unclaimed)
    report = engine.run()
    assert len(report["succeeded"]) == 40 and report["received"] == 40


def test_a_claim_completed_elsewhere_stays_resolved_when_its_holder_runs_again() -> None:
    # The sensor claims 5001 and closes; a mapped completion marks it done in its own record; the same
    # sensor task instance runs again (a clear): its claim must go with the done mark, never be offered again.
    store = MemoryStore()
    sensor = ClaimsLedger(CONN, store, owner="d/r/wait/-1", clock=at(NOW))
    sensor.claim(STEP, [{"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}])
    sensor.close()
    completion = ClaimsLedger(CONN, store, owner="d/r/complete/0", clock=at(NOW))
    completion.mark_done([5001], write=False)
    completion.close()
    again = ClaimsLedger(CONN, store, owner="d/r/wait/-1", clock=at(NOW))
    assert again.prepare_drain(STEP, LEASE, 10) == ([], [])
    later = ClaimsLedger(CONN, store, owner="d/r2/wait/-1", clock=at(NOW + 2 * LEASE))
    assert later.prepare_drain(STEP, LEASE, 10) == ([], [])  # not offered again, ever
    assert later.list_claims(STEP) == []


def test_instances_handed_over_without_a_step_keep_the_step_of_their_claim(emu, client) -> None:
    # instances=sensor.output and no step given: the worker's claim takes the sensor claim's step, so a
    # failed instance is offered again after the lease like any other.
    store = MemoryStore()
    iid = int(emu.create_instances(STEP, count=1)[0]["IntegrationInstanceId"])
    sensor = ClaimsLedger(CONN, store, owner="d/r/wait/-1", clock=at(NOW))
    sensor.claim(STEP, [{"IntegrationInstanceId": iid, "ProcessInstanceId": 1}])
    sensor.close()

    def fail(fields: dict[str, Any]) -> None:
        raise RuntimeError("refused")

    worker = WorkerEngine(client, fail, claims=ClaimsLedger(CONN, store, owner="d/r/work/-1",
                                                           clock=at(NOW + dt.timedelta(seconds=1))))
    report = worker.run([{"IntegrationInstanceId": iid}])
    assert [f["IntegrationInstanceId"] for f in report["failed"]] == [iid]
    # a reader within the lease tidies (the worker's newer claim replaces the sensor's)...
    assert ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW + dt.timedelta(seconds=2))).prepare_drain(
        STEP, LEASE, 10) == (
        [], [iid])
    # ...and after the lease the failed instance is offered again
    offered, _skip = ClaimsLedger(CONN, store, owner="d/r2/wait/-1",
                                  clock=at(NOW + 2 * LEASE)).prepare_drain(STEP, LEASE, 10)
    assert [i["IntegrationInstanceId"] for i in offered] == [iid]
