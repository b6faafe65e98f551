"""The failure notifier against the emulator over loopback: a task for a person from the failing context."""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from tests.conftest import fake_context


def context(task_id: str = "wait", **kwargs: Any) -> dict[str, Any]:
    """A task context; the sensor's task id unless told."""
    return fake_context(task_id, **kwargs)


def sensor(store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationSensor:
    kwargs.setdefault("integration_step_id", 11)
    kwargs.setdefault("deferrable", False)
    return WorkflowsoftIntegrationSensor(task_id="wait", ledger_store=store, **kwargs)


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
