"""Tell the CRM about customers as the "Customer follow-up" process reaches "Notify CRM": Airflow's standard idiom.

The same event-driven run as ``workflowsoft_enrich_events_on_arrival``, written the way Airflow's message-queue
providers are used: an ``AssetWatcher`` with ``MessageQueueTrigger(scheme="workflowsoft", ...)`` (from
``apache-airflow-providers-common-messaging``, the provider's ``messaging`` extra). The trigger is the provider's
integration-step watcher, with the same claims and guarantees as ``integration_step_asset``: each instance is
claimed in the Asset's state store before the event, a burst goes out one event per run, and a run that fails
hands its instances out again after ``reclaim_after``.

Needs Airflow 3.3 or newer (the Asset state store) and ``pip install 'airflow-provider-workflowsoft[messaging]'``.
Knobs, read when the file is parsed: ``WORKFLOWSOFT_POLL_INTERVAL`` (default 30 s) and ``WORKFLOWSOFT_RECLAIM_AFTER``
(default 3600 s).
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher, dag, task

from airflow_provider_workflowsoft.assets.workflowsoft import instances_from_events
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator

NOTIFY_CRM = Asset(
    "workflowsoft_notify_crm",
    watchers=[
        AssetWatcher(
            name="workflowsoft_notify_crm_watcher",
            trigger=MessageQueueTrigger(
                scheme="workflowsoft",
                process_diagram_name="Customer follow-up",
                integration_step_name="Notify CRM",
                max_instances=10,
                poll_interval=float(os.environ.get("WORKFLOWSOFT_POLL_INTERVAL", "30")),
                reclaim_after=float(os.environ.get("WORKFLOWSOFT_RECLAIM_AFTER", "3600")),
            ),
        )
    ],
)


def notify(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    """Tell the CRM about the customer (here: a log line), then the value to write: done."""
    print(f"CRM notified of {fields.get('Customer') or 'an unnamed customer'}")
    return {"Status": "Done"}


@dag(
    dag_id="workflowsoft_notify_crm_on_arrival",
    schedule=[NOTIFY_CRM],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_notify_crm_on_arrival() -> None:
    @task
    def arrived(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return instances_from_events(triggering_asset_events)

    WorkflowsoftIntegrationWorkerOperator(
        task_id="notify",
        python_callable=notify,
        instances=arrived(),
        process_diagram_name="Customer follow-up",
        integration_step_name="Notify CRM",
        max_workers=4,
        retries=2,
        inlets=[NOTIFY_CRM],
    )


workflowsoft_notify_crm_on_arrival()
