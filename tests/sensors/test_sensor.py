"""The integration sensor against the emulator over loopback, in poke and deferrable mode.

The records use a ``MemoryStore`` (injected), the connection comes from ``AIRFLOW_CONN_*``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftInputError,
    WorkflowsoftLookupError,
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
)
from airflow_provider_workflowsoft.records.claims import CLAIMED, ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from airflow_provider_workflowsoft.version_compat import AirflowException
from tests.conftest import TaskDeferred, claim_of, fails_without_retries, fake_context

CONN = "workflowsoft_default"
POLL_PATH = "/api/v2/workflows/instances/new-integrations"


def context(task_id: str = "wait", **kwargs: Any) -> dict[str, Any]:
    """A task context; the sensor's task id unless told."""
    return fake_context(task_id, **kwargs)


def polls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.request_log() if r["path"] == POLL_PATH)


def sensor(store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationSensor:
    kwargs.setdefault("integration_step_id", 11)
    kwargs.setdefault("deferrable", False)
    return WorkflowsoftIntegrationSensor(task_id="wait", ledger_store=store, **kwargs)


def ids(instances: list[dict[str, Any]]) -> list[int]:
    return [i["IntegrationInstanceId"] for i in instances]


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
