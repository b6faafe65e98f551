"""An approval round trip: start a "Purchase approval" process, wait for THAT process to reach its
"Approval decision" step, branch on the decision a person made in Workflowsoft, and complete the step.

The start's answer ``{"Id", "Title"}`` is the new process instance: its ``Id`` is the ``ProcessInstanceId`` that
the poll answers of its integration steps carry, so the sensor is given the start's XCom as it is
(``process_instance_id=start.output``). Deferred, it waits in the triggerer while people work on the process
(hours or days). Instances of other processes that it receives meanwhile are passed on at once, to the run
waiting for them or to any other sensor, batch worker or watcher of the step: nothing is held or lost.

Knob, read when the file is parsed: ``WORKFLOWSOFT_POLL_INTERVAL`` (seconds between the trigger's polls while the
process has not reached the step, default 30).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftStartProcessOperator,
)
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

POLL_INTERVAL = float(os.environ.get("WORKFLOWSOFT_POLL_INTERVAL", "30"))
DECISION = "{{ ti.xcom_pull(task_ids='wait_for_decision')[0]['IntegrationInstanceId'] }}"


@dag(
    dag_id="workflowsoft_approval_round_trip",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"request": "Two laptops for the new hires", "amount": 2400},
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_approval_round_trip() -> None:
    start = WorkflowsoftStartProcessOperator(
        task_id="start_approval",
        process_diagram_name="Purchase approval",
        fields={"Request": "{{ params.request }}", "Amount": "{{ params.amount }}"},
        on_behalf_of="john.doe@example.com",
    )
    decision = WorkflowsoftIntegrationSensor(
        task_id="wait_for_decision",
        process_diagram_name="Purchase approval",
        integration_step_name="Approval decision",
        process_instance_id=start.output,  # {"Id", "Title"}: Id is the ProcessInstanceId of its steps
        fetch_fields=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=7 * 24 * 3600,  # a week for the approver; then the run fails and the wait is dropped
    )

    @task.branch
    def route(instances: list[dict[str, Any]]) -> str:
        return "place_order" if instances[0]["fields"]["Decision"] == "Approved" else "record_rejection"

    place_order = WorkflowsoftCompleteStepOperator(
        task_id="place_order",
        integration_instance_id=DECISION,
        fields={"Order number": "PO-{{ ti.xcom_pull(task_ids='start_approval')['Id'] }}",
                "Reply": "Ordered: {{ params.request }}"},
    )
    record_rejection = WorkflowsoftCompleteStepOperator(
        task_id="record_rejection",
        integration_instance_id=DECISION,
        fields={"Reply": "Rejected: nothing ordered"},
    )
    route(decision.output) >> [place_order, record_rejection]


workflowsoft_approval_round_trip()
