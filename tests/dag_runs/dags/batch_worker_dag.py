"""Burst processing of "Enrich event" instances: the batch operator first (three instances), then the
``@task.workflowsoft_worker`` decorator drains the rest."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import dag, task

from airflow_provider_workflowsoft.operators.batch import WorkflowsoftProcessInstancesOperator


def venue_from_operator(fields, instance):
    return {"Venue code": f"OP-{instance['IntegrationInstanceId']}", "Attendees": len(fields["Event name"])}


@dag(dag_id="workflowsoft_batch_worker", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False)
def workflowsoft_batch_worker():
    first = WorkflowsoftProcessInstancesOperator(
        task_id="first_three",
        python_callable=venue_from_operator,
        integration_diagram_id=11,
        max_instances=3,
        max_workers=2,
    )

    @task.workflowsoft_worker(process_diagram_name="Event registration", integration_step_name="Enrich event",
                              max_workers=4)
    def the_rest(fields, instance, prefix):
        return {"Venue code": f"{prefix}-{instance['IntegrationInstanceId']}", "Category": "Workshop"}

    first >> the_rest(prefix="DEC")


workflowsoft_batch_worker()
