"""Start a "Customer follow-up" process in Workflowsoft for each new customer, then give the team a task.

Reads ``data/new_customers.csv`` at run time, starts one process per row (mapped), then creates one
follow-up task assigned by email.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftStartProcessOperator,
)

CUSTOMERS_CSV = Path(__file__).parent / "data" / "new_customers.csv"


@dag(
    dag_id="workflowsoft_start_processes",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_start_processes() -> None:
    @task
    def read_customers() -> list[dict[str, Any]]:
        with CUSTOMERS_CSV.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("customer", "").strip()]
        return [
            {"fields": {"Customer": row["customer"].strip(), "Contact": row["contact_email"].strip(),
                        "Segment": row["segment"].strip()}}
            for row in rows
        ]

    started = WorkflowsoftStartProcessOperator.partial(
        task_id="start_follow_up",
        process_diagram_name="Customer follow-up",
        on_behalf_of="john.doe@example.com",
    ).expand_kwargs(read_customers())

    follow_up = WorkflowsoftCreateTaskOperator(
        task_id="follow_up_task",
        title="Call the {{ ti.xcom_pull(task_ids='start_follow_up') | length }} new customers ({{ ds }})",
        description="Processes started: {{ ti.xcom_pull(task_ids='start_follow_up') | map(attribute='Id') | list }}",
        assignee="ops@example.com",
        on_behalf_of="john.doe@example.com",
    )
    started >> follow_up


workflowsoft_start_processes()
