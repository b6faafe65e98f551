"""Journey: starting a process and creating a task as the README's reference table shows them.

Without ``on_behalf_of`` (the connection's default is ``system``, which Workflowsoft refuses for starts and
tasks), the task fails before anything is sent, with an error naming ``on_behalf_of`` and what to pass;
with it, the process is started by that user.
"""

from __future__ import annotations

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS
from tests.journeys.conftest import Journey

#: The README's imports on Airflow 3; on 2.11 the ones the README's Install section names for it.
README_IMPORTS = ("from airflow.sdk import {names}" if AIRFLOW_V_3_0_PLUS
                  else "from airflow.providers.common.compat.sdk import {names}")

START_DAGS = '''
import pendulum
{imports}

from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftStartProcessOperator,
)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def without_user():
    WorkflowsoftStartProcessOperator(task_id="start_follow_up", process_diagram_name="Customer follow-up")
    WorkflowsoftCreateTaskOperator(task_id="tell_jane", title="Events enriched", assignee="jane.roe@example.com")


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def start_with_user():
    WorkflowsoftStartProcessOperator(
        task_id="start_follow_up",
        process_diagram_name="Customer follow-up",
        on_behalf_of="john.doe@example.com",
    ) >> WorkflowsoftCreateTaskOperator(
        task_id="tell_jane",
        title="Events enriched",
        assignee="jane.roe@example.com",
        on_behalf_of="john.doe@example.com",
    )


without_user()
start_with_user()
'''.replace("{imports}", README_IMPORTS.format(names="dag"))

CREATES = ("/api/v2/workflows/start", "/api/v2/tasks")


def _creates_sent(emulator: EmulatorServer) -> list[str]:
    return [r["path"] for r in emulator.request_log() if r["method"] == "POST" and r["path"] in CREATES]


@pytest.mark.airflow
def test_start_without_on_behalf_of_fails_before_sending(journey: Journey, emulator: EmulatorServer) -> None:
    journey.add_connection(emulator)
    journey.write_dag("start_processes", START_DAGS)
    result = journey.dags_test("without_user")
    assert result.returncode != 0 and "state=failed" in result.stdout, result.stdout[-6000:]
    for what in ("Starting a process", "Creating a task"):
        assert f"{what} needs on_behalf_of: the Workflowsoft user it is done on behalf of, as a user id, an email " \
               "or a full name" in result.stdout, result.stdout[-6000:]
    state = emulator.snapshot()
    assert _creates_sent(emulator) == []  # nothing was sent: no 400 from the server either
    assert [p for p in state["processes"] if p["source"] == "api"] == [] and state["tasks"] == []

    result = journey.dags_test("start_with_user")
    assert result.returncode == 0 and "state=success" in result.stdout, result.stdout[-6000:]
    state = emulator.snapshot()
    assert [(p["process_diagram_id"], p["created_by"]) for p in state["processes"] if p["source"] == "api"] == [(2, 1)]
    assert [(t["title"], t["assigned_user_id"], t["created_by"]) for t in state["tasks"]] == [("Events enriched", 2, 1)]
