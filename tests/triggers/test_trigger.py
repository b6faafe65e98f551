"""The integration trigger against the emulator over loopback: waits, drains with fields, rides out faults."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger

POLL_PATH = "/api/v2/workflows/instances/new-integrations"


def polls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.request_log() if r["path"] == POLL_PATH)


def ids(instances: list[dict[str, Any]]) -> list[int]:
    return [i["IntegrationInstanceId"] for i in instances]


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
    trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, workflowsoft_conn_id="c", max_instances=3,
                                             fetch_fields=True, poll_interval=5, max_consecutive_failures=2,
                                             skip_ids=[1], client_options={"max_retries": 0})
    classpath, kwargs = trigger.serialize()
    json.dumps(kwargs)
    module, name = classpath.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls(**kwargs).serialize() == (classpath, kwargs)


def test_trigger_0_1_argument_names_warn_and_refuse_a_conflicting_new_name() -> None:
    assert WorkflowsoftIntegrationTrigger(integration_step_id=11).workflowsoft_conn_id == "workflowsoft_default"
    # only an absent id is the default one: an empty id stays what it is (and fails as an unknown connection)
    assert WorkflowsoftIntegrationTrigger(integration_step_id=11, workflowsoft_conn_id="").workflowsoft_conn_id == ""
    with pytest.warns(DeprecationWarning, match=r"WorkflowsoftIntegrationTrigger\(conn_id=\.\.\.\) is deprecated"):
        trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, conn_id="c")
    assert trigger.serialize()[1]["workflowsoft_conn_id"] == "c"
    with pytest.warns(DeprecationWarning), pytest.raises(
            WorkflowsoftInputError, match="both workflowsoft_conn_id='d' and conn_id='c'; keep workflowsoft_conn_id"):
        WorkflowsoftIntegrationTrigger(integration_step_id=11, workflowsoft_conn_id="d", conn_id="c")
    with pytest.warns(DeprecationWarning), pytest.raises(
            WorkflowsoftInputError, match="got both integration_step_id=12 and integration_diagram_id=11"):
        WorkflowsoftIntegrationTrigger(integration_step_id=12, integration_diagram_id=11)
    with pytest.warns(DeprecationWarning):  # the same value under both names is no conflict
        trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, integration_diagram_id=11)
    assert trigger.integration_step_id == 11


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

    import airflow_provider_workflowsoft.triggers.workflowsoft as module

    original = module.aget_connection
    module.aget_connection = fake_conn
    try:
        event = first_event(trigger)
    finally:
        module.aget_connection = original
    assert event["status"] == "success" and ids(event["instances"]) == [7] and "500" in event["warning"]
