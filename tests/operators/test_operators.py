"""The step, process, task and claims operators against the emulator over loopback.

The records use a ``MemoryStore`` (injected), the connection comes from ``AIRFLOW_CONN_*``.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftInputError,
    WorkflowsoftLookupError,
    WorkflowsoftValidationError,
)
from airflow_provider_workflowsoft.emulator import EmulatorServer
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
from airflow_provider_workflowsoft.records.claims import DONE, ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from tests.conftest import claim_of, fails_without_retries, fake_context, own_state

CONN = "workflowsoft_default"


def context(task_id: str = "wait", **kwargs: Any) -> dict[str, Any]:
    """A task context; the sensor's task id unless told."""
    return fake_context(task_id, **kwargs)


def writes(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [r for r in emulator.request_log() if r["method"] in ("POST", "PATCH")]


def sensor(store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationSensor:
    kwargs.setdefault("integration_step_id", 11)
    kwargs.setdefault("deferrable", False)
    return WorkflowsoftIntegrationSensor(task_id="wait", ledger_store=store, **kwargs)


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


def test_claims_operators_read_instance_ids_as_the_batch_worker_reads_instances(store) -> None:
    # One reading of "a list of instances" (protocol.given_instances): an instance dict's JSON text, commas and all.
    claims = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")
    claims.claim(11, [{"IntegrationInstanceId": 1, "ProcessInstanceId": 2}, {"IntegrationInstanceId": 3}])
    released = WorkflowsoftReleaseClaimsOperator(
        task_id="r", instance_ids='{"IntegrationInstanceId": 1, "ProcessInstanceId": 2}', ledger_store=store,
    ).execute(context("r"))
    assert [r["integration_instance_id"] for r in released] == [1]
    released = WorkflowsoftReleaseClaimsOperator(task_id="r", instance_ids=[{"integrationInstanceId": "3"}],
                                                 ledger_store=store).execute(context("r"))
    assert [r["integration_instance_id"] for r in released] == [3]
    with fails_without_retries(WorkflowsoftInputError, match=r"instance_ids: '\[1,' is refused: it is not valid JSON"):
        WorkflowsoftReleaseClaimsOperator(task_id="x", instance_ids="[1,", ledger_store=store).execute(context("x"))
    with fails_without_retries(WorkflowsoftInputError, match=r"instance_ids: 'one' .* must be an integer id"):
        WorkflowsoftReleaseClaimsOperator(task_id="x", instance_ids="one", ledger_store=store).execute(context("x"))
