# The first DAG of the 0.3 README, verbatim: DAGs written against it keep running (tests/dag_runs/test_readme.py).
import pendulum
from airflow.sdk import dag, task

from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftStartProcessOperator,
)
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def enrich_events():
    new_events = WorkflowsoftIntegrationSensor(
        task_id="wait_for_events",
        process_diagram_name="Event registration",
        integration_step_name="Enrich event",
        fetch_fields=True,       # each instance carries its fields as {label: value}
        max_instances=10,        # drain up to 10 new instances per run
        deferrable=True,         # wait in the triggerer, not in a worker slot
    )

    @task
    def compute(instance: dict) -> dict:
        fields = instance["fields"]
        return {
            "integration_instance_id": instance["IntegrationInstanceId"],
            "fields": {"Venue code": "HALL-" + fields["Event name"][:3].upper(), "Event exists": True},
        }

    WorkflowsoftCompleteStepOperator.partial(task_id="complete").expand_kwargs(
        compute.expand(instance=new_events.output)
    ) >> WorkflowsoftStartProcessOperator(
        task_id="start_follow_up",
        process_diagram_name="Customer follow-up",
        on_behalf_of="john.doe@example.com",
    ) >> WorkflowsoftCreateTaskOperator(
        task_id="tell_jane",
        title="Events enriched for {{ ds }}",
        assignee="jane.roe@example.com",
        on_behalf_of="john.doe@example.com",
    )


enrich_events()

