"""The notifier as a deadline alert's callback: run by Airflow's own ``CallbackTrigger`` (what the triggerer runs for
an ``AsyncCallback``), against the emulator over loopback. The deadline alert under a real scheduler and triggerer
is tested in tests/deployment/test_embedded.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier

callback = pytest.importorskip("airflow.triggers.callback", reason="deadline alerts' callbacks: Airflow 3.1+")

PATH = "airflow_provider_workflowsoft.notifications.workflowsoft.WorkflowsoftNotifier"
CONTEXT = {"dag_run": {"dag_id": "nightly_load", "dag_run_id": "manual__2026-12-01", "state": "running"},
           "deadline": {"id": "d-1", "deadline_time": "2026-12-01T10:30:00+00:00"}}


def run_callback(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of Airflow's CallbackTrigger for the notifier, as the triggerer runs it."""
    trigger = callback.CallbackTrigger(callback_path=PATH, callback_kwargs={**kwargs, "context": dict(CONTEXT)})

    async def go() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(go())


@pytest.fixture
def no_sync_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggerer's path must not touch the blocking (requests) client."""
    def refuse(self: WorkflowsoftHook) -> Any:
        raise AssertionError("the sync client was used on the event loop")

    monkeypatch.setattr(WorkflowsoftHook, "client", property(refuse))


def test_a_missed_deadline_creates_a_task_from_the_event_loop(emu, no_sync_client) -> None:
    events = run_callback({"assignee": "ops@example.com", "on_behalf_of": "john.doe@example.com"})
    assert [e["state"] for e in events] == ["running", "success"], events
    (task,) = emu.snapshot()["tasks"]
    assert task["title"] == "Airflow DAG run missed its deadline: nightly_load"
    assert "manual__2026-12-01" in task["description"] and "2026-12-01T10:30:00" in task["description"]
    assert task["assigned_user_id"] == 3 and task["created_by"] == 1


def test_an_unknown_assignee_fails_the_callback_with_the_reason(emu, no_sync_client) -> None:
    events = run_callback({"assignee": "nobody@example.com", "title": "Late: {{ dag_run.dag_id }}"})
    assert events[-1]["state"] == "failed" and "nobody@example.com" in events[-1]["body"], events
    assert emu.snapshot()["tasks"] == []


def test_task_failures_keep_their_defaults() -> None:
    notifier = WorkflowsoftNotifier(assignee="ops@example.com")
    assert notifier.title.startswith("Airflow task failed") and "ti.log_url" in str(notifier.description)
