"""Who a task is for and who creates it: one rule (``task_people``) for the create-task operator, the notifier,
``notify_on_failure`` and ``notify_on_park``, sync and async, against the emulator over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftValidationError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier
from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCreateTaskOperator
from airflow_provider_workflowsoft.records.stores import MemoryStore
from tests.conftest import fake_context

JOHN, JANE, OPS = 1, 2, 3


def config(emu: EmulatorServer, connection_user: str = "system") -> ClientConfig:
    return ClientConfig(base_url=emu.base_url, api_token="demo-token", max_retries=0, on_behalf_of=connection_user)


@pytest.mark.parametrize(
    ("connection_user", "assignee", "on_behalf_of", "alert", "expected"),
    [
        # A task on request: the creator is on_behalf_of, else the connection's user; the assignee, else the creator.
        ("system", "jane.roe@example.com", "john.doe@example.com", False, (JANE, JOHN)),
        ("system", None, "john.doe@example.com", False, (JOHN, JOHN)),
        ("ops@example.com", None, None, False, (OPS, OPS)),
        ("ops@example.com", "Jane Roe", None, False, (JANE, OPS)),
        # An alert: the same, then the assignee as its own creator (an alert is not lost for want of a creator).
        ("system", "jane.roe@example.com", None, True, (JANE, JANE)),
        ("ops@example.com", "jane.roe@example.com", None, True, (JANE, OPS)),
        ("system", None, "john.doe@example.com", True, (JOHN, JOHN)),
        ("system", "2", 1, True, (JANE, JOHN)),
    ],
)
def test_one_rule_sync_and_async(emulator: EmulatorServer, connection_user: str, assignee: Any, on_behalf_of: Any,
                                 alert: bool, expected: tuple[int, int]) -> None:
    with WorkflowsoftClient(config(emulator, connection_user)) as client:
        assignee_id, creator = client.task_people(assignee, on_behalf_of, alert=alert)
    assert (int(assignee_id), int(creator)) == expected

    async def run() -> tuple[Any, Any]:
        async with AsyncWorkflowsoftClient(config(emulator, connection_user)) as client:
            return await client.task_people(assignee, on_behalf_of, alert=alert)

    assignee_id, creator = asyncio.run(run())
    assert (int(assignee_id), int(creator)) == expected


@pytest.mark.parametrize("alert", [False, True])
def test_no_user_anywhere_is_refused_before_sending(emulator: EmulatorServer, alert: bool) -> None:
    with WorkflowsoftClient(config(emulator)) as client, \
            pytest.raises(WorkflowsoftValidationError, match="Creating a task needs on_behalf_of"):
        client.task_people(None, None, alert=alert)
    assert emulator.request_log() == []


def test_a_request_with_only_an_assignee_is_refused_before_sending(emulator: EmulatorServer) -> None:
    """The create-task operator's promise: its assignee does not silently become its creator."""
    with WorkflowsoftClient(config(emulator)) as client, \
            pytest.raises(WorkflowsoftValidationError, match="connection's on_behalf_of is 'system'"):
        client.task_people("jane.roe@example.com", None)
    assert [r for r in emulator.request_log() if r["method"] == "POST"] == []


def test_the_notifier_and_the_operator_create_what_the_rule_says(emu: EmulatorServer) -> None:
    ctx = fake_context("load")
    ctx["exception"] = RuntimeError("boom")
    ctx["dag"] = None
    WorkflowsoftNotifier(on_behalf_of="john.doe@example.com")(ctx)
    WorkflowsoftCreateTaskOperator(task_id="t", title="Check", on_behalf_of="jane.roe@example.com",
                                   ledger_store=MemoryStore()).execute(fake_context("t"))
    first, second = emu.snapshot()["tasks"]
    assert (first["assigned_user_id"], first["created_by"]) == (JOHN, JOHN)
    assert (second["assigned_user_id"], second["created_by"]) == (JANE, JANE)
