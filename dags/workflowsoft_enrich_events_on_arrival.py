"""Enrich new "Event registration" processes as they arrive: the README's first DAG, event-driven.

No schedule and no sensor task: the DAG is scheduled on the Asset of the integration step "Enrich event",
whose watcher polls Workflowsoft in the triggerer and starts a run only when new instances arrive (each
claimed before the run is asked for, so none is lost). The run takes the instances of every event it
consumes and hands them to the batch worker, which reads each instance's fields, computes the values,
writes them and completes the step.

Needs Airflow 3.3 or newer (asset watchers with the Asset state store). Knobs, read when the file is
parsed: ``WORKFLOWSOFT_POLL_INTERVAL`` (seconds between polls when nothing is new, default 30) and
``WORKFLOWSOFT_RECLAIM_AFTER`` (seconds a run has to complete what it was handed before the watcher hands
it out again, default 3600).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_workflowsoft.assets.workflowsoft import instances_from_events, integration_step_asset
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator

ENRICH_EVENT = integration_step_asset(
    process_diagram_name="Event registration",
    integration_step_name="Enrich event",
    max_instances=100,
    poll_interval=float(os.environ.get("WORKFLOWSOFT_POLL_INTERVAL", "30")),
    reclaim_after=float(os.environ.get("WORKFLOWSOFT_RECLAIM_AFTER", "3600")),
)


def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    """The values to write: the README's rule."""
    return {"Venue code": "HALL-" + str(fields["Event name"])[:3].upper(), "Event exists": True}


@dag(
    dag_id="workflowsoft_enrich_events_on_arrival",
    schedule=[ENRICH_EVENT],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_enrich_events_on_arrival() -> None:
    @task
    def arrived(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return instances_from_events(triggering_asset_events)

    WorkflowsoftIntegrationWorkerOperator(
        task_id="enrich",
        python_callable=enrich,
        instances=arrived(),
        process_diagram_name="Event registration",
        integration_step_name="Enrich event",
        max_workers=8,
        retries=2,
        inlets=[ENRICH_EVENT],  # the Assets view shows that this task reads the step (the same Asset object)
    )


workflowsoft_enrich_events_on_arrival()
