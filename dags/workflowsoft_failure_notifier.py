"""A Workflowsoft task for the ops team when an Airflow task fails.

``load`` fails on purpose when the DAG is triggered with ``{"fail": true}``; its
``on_failure_callback`` then creates a Workflowsoft task (title and description name the DAG, the
task, the run and link to the log).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier


@dag(
    dag_id="workflowsoft_failure_notifier",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"fail": Param(False, type="boolean", description="Make the task fail on purpose")},
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_failure_notifier() -> None:
    @task(
        retries=0,
        on_failure_callback=WorkflowsoftNotifier(assignee="ops@example.com", on_behalf_of="john.doe@example.com"),
    )
    def load(params: dict[str, Any] | None = None) -> str:
        if params and params.get("fail"):
            raise RuntimeError("Failing on purpose (param 'fail' is true)")
        return "loaded"

    load()


workflowsoft_failure_notifier()
