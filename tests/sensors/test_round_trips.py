"""Round trips: a sensor waiting for one process instance at a step (``process_instance_id``), in poke and
deferrable mode, with other waiters and a batch worker draining the same step, against the emulator over
loopback with both server readings. Every waiter gets exactly its own instance, every other instance reaches
the worker, nothing is completed twice, and nothing is left claimed."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import WAITS, ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger
from airflow_provider_workflowsoft.version_compat import AirflowSensorTimeout
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from tests.conftest import TaskDeferred, fails_without_retries, fake_context
from tests.triggers.test_trigger import first_event

CONN = "workflowsoft_default"
STEP = 11
LEASE = dt.timedelta(minutes=10)
COMPLETE_PATH = "/api/v2/tasks/"


@pytest.fixture
def client(emu: EmulatorServer) -> Iterator[WorkflowsoftClient]:
    with WorkflowsoftClient(ClientConfig(base_url=emu.base_url, api_token="demo-token", max_retries=0)) as c:
        yield c


def waiter(store: MemoryStore, pid: Any, **kwargs: Any) -> WorkflowsoftIntegrationSensor:
    kwargs.setdefault("deferrable", False)
    return WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=STEP, process_instance_id=pid,
                                         reclaim_after=LEASE, ledger_store=store, **kwargs)


def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    return {"Venue code": f"W-{instance['IntegrationInstanceId']}"}


def worker_run(client: WorkflowsoftClient, store: MemoryStore, run: int) -> dict[str, Any]:
    claims = ClaimsLedger(CONN, store, owner=f"burst/w{run}/enrich/-1")
    return WorkerEngine(client, enrich, integration_step_id=STEP, claims=claims, max_instances=100, max_workers=2,
                       reclaim_after=LEASE, progress_interval=None).run()


def completions(emu: EmulatorServer) -> Counter[int]:
    return Counter(int(r["path"].split("/")[4]) for r in emu.request_log()
                   if r["method"] == "PATCH" and r["path"].startswith(COMPLETE_PATH) and r["status"] == 200)


def start(emu: EmulatorServer, diagram: int = 1) -> dict[str, Any]:
    return emu.state.start_process({"TemplateId": diagram}, "1")


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_twenty_waiters_and_a_batch_worker_share_a_step(emu: EmulatorServer, client: WorkflowsoftClient,
                                                        semantics: str) -> None:
    emu.update_settings(poll_semantics=semantics)
    store = MemoryStore()
    others = [i["IntegrationInstanceId"] for i in emu.create_instances(STEP, count=5)]  # nobody waits for them
    processes = [start(emu)["Id"] for _ in range(20)]
    others += [i["IntegrationInstanceId"] for i in emu.create_instances(STEP, count=5)]
    # The start's answer as the sensor gets it from XCom: the dict, its id as text, or the rendered template.
    given = [{"Id": p, "Title": "x"} if n % 3 == 0 else str(p) if n % 3 == 1 else repr({"Id": p}) for n, p in
             enumerate(processes)]
    got: dict[int, list[dict[str, Any]]] = {}
    worked: list[int] = []
    for round_ in range(60):
        for n, pid in enumerate(processes):
            if pid in got:
                continue
            ctx = fake_context("wait", run_id=f"r{n}")
            result = waiter(store, given[n]).poke(ctx)
            if result.is_done:
                got[pid] = result.xcom_value
                for instance in result.xcom_value:  # the waiter's run completes its own instance
                    WorkflowsoftCompleteStepOperator(task_id="complete", integration_instance_id=instance,
                                                     fields={"Venue code": "mine"}, ledger_store=store,
                                                     ).execute(fake_context("complete", run_id=f"r{n}"))
        report = worker_run(client, store, round_)
        assert not report["failed"], report
        worked += report["succeeded"]
        if len(got) == len(processes) and set(others) <= set(worked):
            break
    assert sorted(got) == sorted(processes)
    for pid, instances in got.items():  # exactly its own instance
        assert [i["ProcessInstanceId"] for i in instances] == [pid]
    mine = {i["IntegrationInstanceId"] for instances in got.values() for i in instances}
    assert set(worked) == set(others) and not mine & set(worked)
    done = completions(emu)
    assert set(done) == mine | set(others) and max(done.values()) == 1  # nothing completed twice
    assert ClaimsLedger(CONN, store, owner="reader").list_claims(STEP) == []  # nothing left claimed or put back


def test_a_waiter_in_poke_mode_passes_other_processes_on_and_returns_its_own(emu: EmulatorServer,
                                                                            client: WorkflowsoftClient) -> None:
    store = MemoryStore()
    other = emu.create_instances(STEP, count=1)[0]
    pid = start(emu)["Id"]
    result = waiter(store, {"Id": pid, "Title": "Event registration #1002"}).poke(fake_context("wait"))
    assert result.is_done and [i["ProcessInstanceId"] for i in result.xcom_value] == [pid]
    report = worker_run(client, store, 1)  # the other process's instance was put back: offered at once
    assert report["succeeded"] == [other["IntegrationInstanceId"]]


def test_a_waiter_whose_process_never_comes_times_out_and_drops_its_wait(emu: EmulatorServer,
                                                                          client: WorkflowsoftClient) -> None:
    store = MemoryStore()
    ctx = fake_context("wait")
    sensor = waiter(store, 4242, timeout=0.5, poke_interval=0.1)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute(ctx)
    record = store.get(naming.claims_key(CONN, naming.owner_from_context(ctx)))
    assert not (record or {}).get(WAITS)
    # Its process's instance, arriving later, goes to the step's other pollers.
    late = emu.create_instances(STEP, count=1)[0]
    assert worker_run(client, store, 1)["succeeded"] == [late["IntegrationInstanceId"]]


@pytest.mark.parametrize("bad", ["abc", {"Title": "no id"}, -3, True, "[1, 2]"])
def test_a_bad_process_instance_id_fails_without_retries_naming_it(emu: EmulatorServer, bad: Any) -> None:
    with fails_without_retries(WorkflowsoftInputError, match="process_instance_id"):
        waiter(MemoryStore(), bad).execute(fake_context("wait"))
    assert emu.request_log() == []  # nothing was polled


def test_the_deferred_trigger_of_a_waiter_passes_on_and_fires_for_its_own(emu: EmulatorServer,
                                                                         client: WorkflowsoftClient) -> None:
    store = MemoryStore()
    others = [i["IntegrationInstanceId"] for i in emu.create_instances(STEP, count=3)]
    pid = start(emu)["Id"]
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, poll_interval=0.05, process_instance_id=pid,
                                             claims_owner="dag/r1/wait/-1", reclaim_after=LEASE.total_seconds())
    trigger.claims_store = store
    event = first_event(trigger)
    assert event["status"] == "success" and [i["ProcessInstanceId"] for i in event["instances"]] == [pid]
    assert "passed" not in event  # put back in the records, before the event
    assert sorted(worker_run(client, store, 1)["succeeded"]) == others


def test_a_deferred_waiter_without_claims_hands_others_to_the_sensor(emu: EmulatorServer) -> None:
    """Before Airflow 3.3 the trigger keeps no claims: what it does not keep comes back in the event's "passed",
    and the sensor puts it back and defers again."""
    store = MemoryStore()
    other = emu.create_instances(STEP, count=1)[0]
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, poll_interval=0.05, process_instance_id=4242,
                                             wait_until=10**10)
    event = first_event(trigger)
    assert event["passed"] == [other] and event["instances"] == [] and event["wait_until"] == 10**10
    sensor = waiter(store, 4242, deferrable=True)
    with pytest.raises(TaskDeferred):
        sensor.execute_complete(fake_context("wait"), event)
    (entry,) = ClaimsLedger(CONN, store, owner="reader").list_claims(STEP)
    assert entry["integration_instance_id"] == other["IntegrationInstanceId"] and entry["released"]


def test_a_deferred_waiter_ends_at_its_timeout_and_drops_its_wait(emu: EmulatorServer) -> None:
    store = MemoryStore()
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=STEP, poll_interval=0.05, process_instance_id=4242,
                                             claims_owner="dag/r1/wait/-1", wait_until=time.time() + 0.3)
    trigger.claims_store = store
    event = first_event(trigger)
    assert event == {"status": "timeout", "instances": []}
    assert store.get(naming.claims_key(CONN, "dag/r1/wait/-1"))[WAITS]  # the trigger recorded the wait
    with pytest.raises(AirflowSensorTimeout, match="4242"):
        waiter(store, 4242, deferrable=True).execute_complete(fake_context("wait", run_id="r1"), event)
    assert not (store.get(naming.claims_key(CONN, "dag/r1/wait/-1")) or {}).get(WAITS)

