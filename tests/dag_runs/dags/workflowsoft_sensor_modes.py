"""Test DAGs: the integration sensor in poke and reschedule modes, with dynamic mapping over its output."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import dag

from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftGetFieldsOperator,
)
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor


def build(mode: str) -> None:
    @dag(
        dag_id=f"workflowsoft_sensor_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
    )
    def sensor_dag() -> None:
        waiting = WorkflowsoftIntegrationSensor(
            task_id="wait",
            integration_diagram_id="{{ params.step }}",
            max_instances="{{ params.max_instances }}",
            mode=mode,
            deferrable=False,
            poke_interval=1,
            timeout=120,
            params={"step": 21, "max_instances": 5},
        )
        read = WorkflowsoftGetFieldsOperator.partial(task_id="read").expand(integration_instance_id=waiting.output)
        complete = WorkflowsoftCompleteStepOperator.partial(task_id="complete", fields={"Status": "Done"}).expand(
            integration_instance_id=waiting.output
        )
        read >> complete

    sensor_dag()


for _mode in ("poke", "reschedule"):
    build(_mode)
