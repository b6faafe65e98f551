"""The same work as the batch operator, as one mapped task per integration instance (benchmark only)."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import dag, task


@dag(dag_id="bench_mapped_per_instance", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False)
def bench_mapped_per_instance():
    @task
    def drain() -> list[int]:
        from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

        hook = WorkflowsoftHook()
        ids = []
        while (found := hook.poll_new_integration(11)) is not None:
            ids.append(found["IntegrationInstanceId"])
        return ids

    @task
    def one(instance_id: int) -> dict:
        from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

        hook = WorkflowsoftHook()
        fields = hook.get_fields(instance_id)
        return hook.update_and_complete(instance_id, {"Venue code": f"V-{instance_id}", "Attendees": 42},
                                        fields=fields)

    one.expand(instance_id=drain())


bench_mapped_per_instance()
