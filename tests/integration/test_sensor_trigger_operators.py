"""Sensor, trigger, async client, operators and notifier against the emulator over loopback.

The records use a ``MemoryStore`` (injected), the connection comes from ``AIRFLOW_CONN_*``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig
from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftInputError,
    WorkflowsoftLookupError,
    WorkflowsoftTransientError,
    WorkflowsoftValidationError,
)
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier
from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftClaimsOperator,
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftGetFieldsOperator,
    WorkflowsoftListClaimsOperator,
    WorkflowsoftReleaseClaimsOperator,
    WorkflowsoftStartProcessOperator,
    WorkflowsoftUpdateFieldsOperator,
    coerce_instance_id,
)
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import CLAIMED, DONE, ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger
from airflow_provider_workflowsoft.version_compat import AirflowException
from tests.conftest import fails_without_retries, fake_context

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 2.11
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

CONN = "workflowsoft_default"
POLL_PATH = "/api/v2/workflows/instances/new-integrations"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def context(task_id: str = "wait", **kwargs: Any) -> dict[str, Any]:
    """A task context; the sensor's task id unless told."""
    return fake_context(task_id, **kwargs)


def claim_of(store: MemoryStore, iid: Any) -> dict[str, Any] | None:
    """An instance's newest claim as any reader sees it (``state``, ``owner``, ...), or None."""
    for entry in ClaimsLedger(CONN, store, owner="reader").list_claims(include_done=True):
        if entry["integration_instance_id"] == iid:
            return entry
    return None


def own_state(store: MemoryStore, ctx: dict[str, Any], iid: Any) -> str | None:
    """What a later try of that task instance reads back (a fresh ledger)."""
    return ClaimsLedger(CONN, store, owner=naming.owner_from_context(ctx)).own_state(iid)


def polls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.request_log() if r["path"] == POLL_PATH)


def writes(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [r for r in emulator.request_log() if r["method"] in ("POST", "PATCH")]


def sensor(store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationSensor:
    kwargs.setdefault("integration_step_id", 11)
    kwargs.setdefault("deferrable", False)
    return WorkflowsoftIntegrationSensor(task_id="wait", ledger_store=store, **kwargs)


def ids(instances: list[dict[str, Any]]) -> list[int]:
    return [i["IntegrationInstanceId"] for i in instances]


# -- drain rules --------------------------------------------------------------------------------------


def test_drain_stops_at_limit_empty_repeat_and_skip() -> None:
    drain = Drain(2)
    assert drain.offer({"IntegrationInstanceId": 1}) and drain.offer({"IntegrationInstanceId": 2})
    assert drain.finished and drain.reason == "limit"
    drain = Drain(5)
    drain.offer({"IntegrationInstanceId": 1})
    assert not drain.offer(None) and drain.reason == "empty"
    drain = Drain(5)
    drain.offer({"IntegrationInstanceId": 1})
    assert not drain.offer({"IntegrationInstanceId": "1"}) and drain.reason == "repeated"
    assert ids(drain.instances) == [1]
    drain = Drain(5, skip=[7])
    assert not drain.offer({"IntegrationInstanceId": 7}) and drain.finished and drain.instances == []
    drain = Drain(2, taken=[{"IntegrationInstanceId": 3}, {"IntegrationInstanceId": 4}])
    assert drain.finished  # re-offered claims count in the limit


# -- sensor -------------------------------------------------------------------------------------------


def test_poke_drains_up_to_max_instances_and_claims_each(emu, store) -> None:
    emu.create_instances(11, count=3)
    result = sensor(store, max_instances=2).poke(context())
    assert result.is_done and ids(result.xcom_value) == [5001, 5002]
    assert claim_of(store, 5001)["state"] == CLAIMED and claim_of(store, 5002)["owner"] == "dag/run1/wait/-1"
    assert ids(sensor(store, max_instances=2).poke(context(run_id="run2")).xcom_value) == [5003]
    empty = sensor(store).poke(context(run_id="run3"))
    assert not empty.is_done and empty.xcom_value == []


def test_poke_stops_when_the_server_repeats_the_oldest_open_instance(emu, store) -> None:
    emu.update_settings(poll_semantics="until-completed")
    emu.create_instances(11, count=3)
    result = sensor(store, max_instances=10).poke(context())
    assert ids(result.xcom_value) == [5001]
    assert polls(emu) == 2  # one answer, one repeat: no loop
    # another run while 5001 is still being worked on: the held instance is not taken twice
    emu.clear_request_log()
    again = sensor(store, max_instances=10).poke(context(run_id="run2"))
    assert not again.is_done and polls(emu) == 1


def test_fetch_fields_are_json_safe(emu, store) -> None:
    emu.create_instances(11, values={"Event name": "PyCon", "Event duration": "12.50"})
    (instance,) = sensor(store, fetch_fields=True).poke(context()).xcom_value
    fields = instance["fields"]
    assert fields["Event name"] == "PyCon"
    assert fields["Event start"] == "2021-08-24T21:00:00Z"
    assert fields["Event duration"] == "12.50"
    json.dumps(instance)


def test_names_resolved_at_run_time(emu, store) -> None:
    emu.create_instances(11)
    s = WorkflowsoftIntegrationSensor(task_id="w", process_diagram_name="event registration",
                                      integration_step_name="Enrich Event", ledger_store=store, deferrable=False)
    assert ids(s.poke(context()).xcom_value) == [5001]
    bad = WorkflowsoftIntegrationSensor(task_id="w", process_diagram_name="Event registration",
                                        integration_step_name="Nope", ledger_store=store, deferrable=False)
    with fails_without_retries(WorkflowsoftLookupError):
        bad.poke(context())
    with pytest.raises(WorkflowsoftInputError):
        WorkflowsoftIntegrationSensor(task_id="w", process_diagram_name="x")


def test_stale_claims_are_reoffered_first_and_count_in_max_instances(emu, store) -> None:
    two_hours_ago = lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)  # noqa: E731
    old = ClaimsLedger(CONN, store, owner="dag/old/wait/-1", clock=two_hours_ago)
    old.claim(11, [{"IntegrationInstanceId": 4000, "ProcessInstanceId": 900}])
    emu.create_instances(11, count=2)
    result = sensor(store, max_instances=2).poke(context())
    assert ids(result.xcom_value) == [4000, 5001]
    assert result.xcom_value[0]["reclaimed"] is True
    assert claim_of(store, 4000)["owner"] == "dag/run1/wait/-1"
    # no lease: never re-offered
    ClaimsLedger(CONN, store, owner="x", clock=two_hours_ago).claim(11, [{"IntegrationInstanceId": 4001,
                                                                         "ProcessInstanceId": 901}])
    none_left = sensor(store, max_instances=5, reclaim_after=None).poke(context(run_id="r9"))
    assert 4001 not in ids(none_left.xcom_value)


def test_own_claims_of_an_earlier_try_are_reoffered_at_once(emu, store) -> None:
    earlier_try = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")  # claimed just now, then the try died
    earlier_try.claim(11, [{"IntegrationInstanceId": 4100, "ProcessInstanceId": 1}])
    result = sensor(store, max_instances=3).poke(context())
    assert ids(result.xcom_value) == [4100]


def test_templated_inputs_are_listed() -> None:
    assert set(WorkflowsoftIntegrationSensor.template_fields) >= {
        "integration_step_id", "process_diagram_name", "integration_step_name", "max_instances",
        "fetch_fields", "workflowsoft_conn_id"}
    assert "integration_instance_id" in WorkflowsoftCompleteStepOperator.template_fields
    assert "fields" in WorkflowsoftCompleteStepOperator.template_fields
    for cls in (WorkflowsoftGetFieldsOperator, WorkflowsoftUpdateFieldsOperator, WorkflowsoftStartProcessOperator,
                WorkflowsoftCreateTaskOperator, WorkflowsoftClaimsOperator, WorkflowsoftListClaimsOperator,
                WorkflowsoftReleaseClaimsOperator):
        assert "workflowsoft_conn_id" in cls.template_fields
    assert {"title", "assignee", "on_behalf_of"} <= set(WorkflowsoftCreateTaskOperator.template_fields)
    assert {"title", "description", "assignee", "on_behalf_of"} <= set(WorkflowsoftNotifier.template_fields)


# -- deferrable mode ----------------------------------------------------------------------------------


def test_deferrable_checks_once_then_defers(emu, store) -> None:
    s = sensor(store, deferrable=True, max_instances=4, fetch_fields=True, poke_interval=7, timeout=60)
    with pytest.raises(TaskDeferred) as info:
        s.execute(context())
    assert info.value.method_name == "execute_complete"
    assert info.value.timeout == dt.timedelta(seconds=60)
    classpath, kwargs = info.value.trigger.serialize()
    assert classpath.endswith("WorkflowsoftIntegrationTrigger")
    assert kwargs["integration_step_id"] == 11 and kwargs["max_instances"] == 4
    assert kwargs["fetch_fields"] is True and kwargs["poll_interval"] == 7.0
    assert polls(emu) == 1
    emu.create_instances(11)
    assert ids(s.execute(context())) == [5001]  # found at once: no deferral


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, 30.0),  # the documented default, not poke_interval's 60 s
    ({"poll_interval": 5}, 5.0),
    ({"poll_interval": dt.timedelta(minutes=2), "poke_interval": 7}, 120.0),
    ({"poll_interval": "2.5"}, 2.5),
    ({"poke_interval": 7}, 7.0),  # a 0.3 DAG that set poke_interval keeps its pace
    ({"default_args": {"poke_interval": 9}}, 9.0),
])
def test_deferred_poll_interval(emu, store, kwargs: dict[str, Any], expected: float) -> None:
    s = sensor(store, deferrable=True, timeout=60, **kwargs)
    with pytest.raises(TaskDeferred) as info:
        s.execute(context())
    assert info.value.trigger.serialize()[1]["poll_interval"] == expected
    assert s.poll_interval == expected


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_bad_poll_interval_is_refused_at_once(store, bad: Any) -> None:
    with pytest.raises(WorkflowsoftInputError, match="poll_interval"):
        sensor(store, deferrable=True, poll_interval=bad)


def test_execute_complete_claims_and_returns(emu, store) -> None:
    s = sensor(store, deferrable=True, fetch_fields=True)
    emu.create_instances(11, count=2)
    event = {"status": "success", "instances": [
        {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1001, "fields": {"Event name": "x"}},
        {"IntegrationInstanceId": 5002, "ProcessInstanceId": 1002}]}  # fields missing: read here
    result = s.execute_complete(context(), event)
    assert result[0]["fields"] == {"Event name": "x"} and result[1]["fields"]["Event name"] == "Event Test"
    assert claim_of(store, 5002)["state"] == CLAIMED


def test_execute_complete_error_event_fails_clearly_and_keeps_claims(emu, store) -> None:
    s = sensor(store, deferrable=True)
    event = {"status": "error", "message": "boom 503", "instances": [{"IntegrationInstanceId": 5009}]}
    with pytest.raises(AirflowException, match="boom 503"):
        s.execute_complete(context(), event)
    assert claim_of(store, 5009)["state"] == CLAIMED
    with pytest.raises(TaskDeferred):  # an empty success waits again
        s.execute_complete(context(), {"status": "success", "instances": []})


# -- trigger ------------------------------------------------------------------------------------------


def first_event(trigger: WorkflowsoftIntegrationTrigger, timeout: float = 30) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        agen = trigger.run()
        try:
            event = await asyncio.wait_for(agen.__anext__(), timeout)
        finally:
            await agen.aclose()
        return event.payload

    return asyncio.run(go())


def test_trigger_serialize_round_trip() -> None:
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, conn_id="c", max_instances=3,
                                             fetch_fields=True, poll_interval=5, max_consecutive_failures=2,
                                             skip_ids=[1], client_options={"max_retries": 0})
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)
    module, name = classpath.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls(**kwargs).serialize() == (classpath, kwargs)


def test_trigger_run_waits_then_drains_with_fields(emu) -> None:
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=2, fetch_fields=True,
                                             poll_interval=0.01)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            emu.create_instances(11, count=3)

    trigger.sleep = sleep
    event = first_event(trigger)
    assert event["status"] == "success" and ids(event["instances"]) == [5001, 5002]
    assert event["instances"][0]["fields"]["Event start"] == "2021-08-24T21:00:00Z"
    json.dumps(event)


def test_trigger_rides_out_transient_faults(emu) -> None:
    emu.create_instances(11)
    emu.set_faults(error_rate=1.0, error_statuses=[503], paths=[POLL_PATH], max_faults=3, retry_after=0)
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, poll_interval=0.01,
                                             max_consecutive_failures=5)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    trigger.sleep = sleep
    event = first_event(trigger)
    assert event["status"] == "success" and ids(event["instances"]) == [5001]
    assert len(waits) == 3 and waits == sorted(waits)  # backoff between failed rounds


def test_trigger_gives_up_after_the_bound(emu) -> None:
    emu.set_faults(error_rate=1.0, error_statuses=[502], paths=[POLL_PATH])
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, poll_interval=0.01,
                                             max_consecutive_failures=3)

    async def sleep(seconds: float) -> None:
        return None

    trigger.sleep = sleep
    event = first_event(trigger)
    assert event["status"] == "error" and "3 times in a row" in event["message"] and "502" in event["message"]
    assert polls(emu) == 3


def test_trigger_fails_at_once_on_unknown_step(emu) -> None:
    event = first_event(WorkflowsoftIntegrationTrigger(integration_step_id=999, poll_interval=0.01))
    assert event["status"] == "error" and "404" in event["message"]


def test_trigger_keeps_received_instances_when_a_later_poll_fails() -> None:
    answers = iter([httpx.Response(200, json={"IntegrationInstanceId": 7, "ProcessInstanceId": 1}),
                    httpx.Response(500, text="down")])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=5)
    trigger.client_factory = lambda config: AsyncWorkflowsoftClient(
        ClientConfig(base_url="http://wfs.test", api_token="tok-123456", max_retries=0),
        transport=httpx.MockTransport(handler))

    async def fake_conn(conn_id: str) -> Any:
        return SimpleNamespace(conn_id=conn_id, host="http://wfs.test", schema=None, port=None, login=None,
                               password="tok-123456", extra_dejson={})

    import airflow_provider_workflowsoft.hooks.workflowsoft as module

    original = module.aget_connection
    module.aget_connection = fake_conn
    try:
        event = first_event(trigger)
    finally:
        module.aget_connection = original
    assert event["status"] == "success" and ids(event["instances"]) == [7] and "500" in event["warning"]


# -- async client -------------------------------------------------------------------------------------


def test_async_client_mints_once_and_refreshes_after_401(emu) -> None:
    from airflow_provider_workflowsoft.api.protocol import TokenCache

    login, password = emu.admin_credentials
    cache = TokenCache()
    seen: list[str] = []
    config = ClientConfig(base_url=emu.base_url, login=login, password=password, max_retries=0)

    async def go() -> None:
        async with AsyncWorkflowsoftClient(config, token_cache=cache, on_token=seen.append) as client:
            emu.create_instances(11)
            assert (await client.poll_new_integration(11))["IntegrationInstanceId"] == 5001
            assert (await client.get_field_values(5001))["Event name"] == "Event Test"
            emu.expire_tokens()
            assert await client.poll_new_integration(11) is None

    asyncio.run(go())
    mints = [r for r in emu.request_log() if r["path"] == "/api/v2/app/apitoken"]
    assert len(mints) == 2 and len(seen) == 2


def test_async_client_retries_by_the_shared_policy() -> None:
    statuses = iter([429, 503, 200])
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, json={} if status == 200 else {"Message": "slow down"},
                              headers={"Retry-After": "0.25"})

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def go() -> Any:
        client = AsyncWorkflowsoftClient(ClientConfig(base_url="http://x", api_token="tok-123456", max_retries=2),
                                         transport=httpx.MockTransport(handler), sleep=sleep)
        try:
            return await client.poll_new_integration(11)
        finally:
            await client.aclose()

    assert asyncio.run(go()) is None and sleeps == [0.25, 0.25]
    statuses = iter([503, 503])
    with pytest.raises(WorkflowsoftTransientError):
        asyncio.run(asyncio.wait_for(_poll_with(handler, sleep, max_retries=1), 10))


async def _poll_with(handler: Any, sleep: Any, max_retries: int) -> Any:
    client = AsyncWorkflowsoftClient(ClientConfig(base_url="http://x", api_token="tok-123456",
                                                  max_retries=max_retries),
                                     transport=httpx.MockTransport(handler), sleep=sleep)
    try:
        return await client.poll_new_integration(11)
    finally:
        await client.aclose()


# -- operators ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [5001, "5001", " 5001 ", {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1},
                                   {"IntegrationInstanceId": "5001"}, '{"IntegrationInstanceId": 5001}'])
def test_instance_id_coercion(value: Any) -> None:
    assert coerce_instance_id(value) == 5001


@pytest.mark.parametrize("value", [None, True, "abc", 0, -3, {"ProcessInstanceId": 1}, 1.5])
def test_instance_id_coercion_refuses(value: Any) -> None:
    with pytest.raises(WorkflowsoftInputError):
        coerce_instance_id(value)


def test_get_and_update_fields(emu, store) -> None:
    (instance,) = emu.create_instances(11)
    got = WorkflowsoftGetFieldsOperator(task_id="g", integration_instance_id=instance).execute(context())
    assert got["Event duration"] == "1640.0" and got["Event start"] == "2021-08-24T21:00:00Z"
    as_text = str(instance["IntegrationInstanceId"])
    written = WorkflowsoftUpdateFieldsOperator(task_id="u", integration_instance_id=as_text,
                                               fields={"Attendees": 12}).execute(context())
    assert written == {"Attendees": 12}
    assert emu.state.instances_for(11)[0]["fields"]["Attendees"] == 12


def test_complete_step_writes_completes_and_records(emu, store) -> None:
    (instance,) = emu.create_instances(11)
    op = WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=instance, ledger_store=store,
                                          fields={"Venue code": "HALL-A", "Event duration": "2.5"})
    result = op.execute(context("c"))
    assert result["completed"] and result["fields"] == {"Venue code": "HALL-A", "Event duration": "2.5"}
    view = emu.state.instances_for(11)[0]
    assert view["status"] == "completed" and view["fields"]["Venue code"] == "HALL-A"
    assert own_state(store, context("c"), instance["IntegrationInstanceId"]) == DONE
    # a retry of a done instance: the server's "already completed" is success, nothing rewritten
    emu.clear_request_log()
    again = op.execute(context("c"))
    assert again["already_completed"] is True
    assert [r["method"] for r in writes(emu)] == ["PATCH"]


def test_complete_step_validates_everything_before_any_write(emu, store) -> None:
    (instance,) = emu.create_instances(11)
    missing = WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=instance, ledger_store=store,
                                               fields={"Attendees": 3})
    with fails_without_retries(WorkflowsoftValidationError, match="Venue code"):
        missing.execute(context("c"))
    bad = WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=instance, ledger_store=store,
                                           fields={"Venue code": "X", "Category": "Party"})
    with fails_without_retries(WorkflowsoftValidationError):
        bad.execute(context("c"))
    assert writes(emu) == []
    assert own_state(store, context("c"), instance["IntegrationInstanceId"]) is None
    assert claim_of(store, instance["IntegrationInstanceId"]) is None


def test_complete_step_after_a_lost_answer_accepts_already_completed(emu, store) -> None:
    (instance,) = emu.create_instances(11, values={"Venue code": "V1"})
    iid = instance["IntegrationInstanceId"]
    emu.state.complete(iid, {"Action": "Complete", "CustomAction": "__AUTO__"}, "system")  # the lost try
    result = WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=iid, ledger_store=store,
                                              fields={"Attendees": 5}).execute(context("c", try_number=2))
    assert result["already_completed"] is True
    assert own_state(store, context("c"), iid) == DONE
    # without an earlier try (or a record of it), "already completed" is an error
    (other,) = emu.create_instances(11, values={"Venue code": "V2"})
    emu.state.complete(other["IntegrationInstanceId"], {"Action": "Complete", "CustomAction": "__AUTO__"}, "system")
    with pytest.raises(Exception, match="409"):
        WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=other,
                                         ledger_store=store).execute(context("c"))


def test_start_process_by_name_once_per_task_instance(emu, store) -> None:
    op = WorkflowsoftStartProcessOperator(task_id="s", process_diagram_name="Invoice approval",
                                          on_behalf_of="Jane Roe", fields={"Amount": "12.30"}, ledger_store=store)
    first = op.execute(context("s"))
    assert set(first) == {"Id", "Title"}
    assert op.execute(context("s")) == first  # a retry returns the recorded result
    processes = emu.snapshot()["processes"]
    assert len(processes) == 1 and processes[0]["created_by"] == 2 and processes[0]["process_diagram_id"] == 3
    op.execute(context("s", map_index=1))
    assert len(emu.snapshot()["processes"]) == 2
    with pytest.raises(WorkflowsoftInputError):
        WorkflowsoftStartProcessOperator(task_id="s")


def test_create_task_resolves_people(emu, store) -> None:
    task = WorkflowsoftCreateTaskOperator(task_id="t", title="Check", description="d", assignee="ops@example.com",
                                          on_behalf_of=1, ledger_store=store).execute(context("t"))
    assert task["Title"] == "Check"
    (stored,) = emu.snapshot()["tasks"]
    assert stored["assigned_user_id"] == 3 and stored["created_by"] == 1
    with fails_without_retries(WorkflowsoftLookupError):
        WorkflowsoftCreateTaskOperator(task_id="t2", title="x", assignee="nobody@nowhere",
                                       on_behalf_of=1, ledger_store=store).execute(context("t2"))


def test_claims_operator_lists_and_releases(store) -> None:
    claims = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")
    claims.claim(11, [{"IntegrationInstanceId": 1, "ProcessInstanceId": 2}, {"IntegrationInstanceId": 3}])
    listed = WorkflowsoftListClaimsOperator(task_id="l", integration_step_id="11",
                                            ledger_store=store).execute(context("l"))
    assert [r["integration_instance_id"] for r in listed] == [1, 3]
    released = WorkflowsoftReleaseClaimsOperator(task_id="r", instance_ids="[1]",
                                                 ledger_store=store).execute(context("r"))
    assert [r["integration_instance_id"] for r in released] == [1]
    later_reader = ClaimsLedger(CONN, store, owner="reader")
    # put back: still claimed, offered again by the next drain whatever the lease
    assert [(r["integration_instance_id"], bool(r.get("released"))) for r in later_reader.list_claims(11)] == [
        (1, True), (3, False)]
    offered, _ = ClaimsLedger(CONN, store, owner="dag/run2/wait/-1").prepare_drain(11, None, 10)
    assert [i["IntegrationInstanceId"] for i in offered] == [1]
    WorkflowsoftReleaseClaimsOperator(task_id="r", instance_ids="1", forget=True,
                                      ledger_store=store).execute(context("r"))
    assert [r["integration_instance_id"] for r in ClaimsLedger(CONN, store, owner="reader").list_claims(11)] == [3]
    with fails_without_retries(WorkflowsoftInputError):
        WorkflowsoftReleaseClaimsOperator(task_id="x", instance_ids="", ledger_store=store).execute({})
    with pytest.warns(DeprecationWarning), fails_without_retries(WorkflowsoftInputError):
        WorkflowsoftClaimsOperator(task_id="x", action="drop", ledger_store=store).execute({})


# -- notifier -----------------------------------------------------------------------------------------


def test_notifier_creates_a_task_from_the_failing_context(emu) -> None:
    notifier = WorkflowsoftNotifier(assignee="Ops Team", on_behalf_of="john.doe@example.com")
    ctx = context("load", run_id="manual__1")
    ctx["exception"] = RuntimeError("disk full")
    ctx["dag"] = None  # every callback context has one; Airflow 2.11's notifier reads it unconditionally
    notifier(ctx)
    (task,) = emu.snapshot()["tasks"]
    assert task["title"] == "Airflow task failed: dag.load"
    assert "manual__1" in task["description"] and "disk full" in task["description"]
    assert "http://airflow/log" in task["description"]
    assert task["assigned_user_id"] == 3 and task["created_by"] == 1


def test_0_1_names_still_work_with_a_deprecation_warning() -> None:
    from airflow_provider_workflowsoft.operators.batch import (
        WorkflowsoftIntegrationWorkerOperator,
        WorkflowsoftProcessInstancesOperator,
    )

    with pytest.warns(DeprecationWarning, match="integration_step_id"):
        sensor = WorkflowsoftIntegrationSensor(task_id="old_name", integration_diagram_id=11)
    assert sensor.integration_step_id == 11
    with pytest.warns(DeprecationWarning, match=r"WorkflowsoftIntegrationSensor.integration_diagram_id is deprecated"):
        assert sensor.integration_diagram_id == 11
    with pytest.warns(DeprecationWarning, match="WorkflowsoftIntegrationWorkerOperator"):
        worker = WorkflowsoftProcessInstancesOperator(task_id="old_worker", python_callable=lambda f: None,
                                                      integration_step_id=11)
    assert isinstance(worker, WorkflowsoftIntegrationWorkerOperator)
    with pytest.warns(DeprecationWarning, match="integration_step_id"):
        trigger = WorkflowsoftIntegrationTrigger(integration_diagram_id=11)
    assert trigger.serialize()[1]["integration_step_id"] == 11
    with pytest.warns(DeprecationWarning, match="use workflowsoft_conn_id"):
        assert trigger.conn_id == "workflowsoft_default"
    with pytest.raises(WorkflowsoftInputError, match="both integration_step_id=12 and integration_diagram_id=11"), \
            pytest.warns(DeprecationWarning):
        WorkflowsoftIntegrationSensor(task_id="both", integration_step_id=12, integration_diagram_id=11)
