"""The README's batch worker, as a DAG author writes it, for ``make bench`` (sizes from the environment)."""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import dag, task

N = int(os.environ.get("BENCH_DAG_N", "200"))
WORKERS = int(os.environ.get("BENCH_DAG_WORKERS", "16"))
POLLERS = int(os.environ["BENCH_DAG_POLLERS"]) if os.environ.get("BENCH_DAG_POLLERS") else None
MAX_UNCLAIMED = int(os.environ["BENCH_DAG_MAX_UNCLAIMED"]) if os.environ.get("BENCH_DAG_MAX_UNCLAIMED") else None


@dag(dag_id="bench_batch_operator", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False)
def bench_batch_operator():
    @task.workflowsoft_worker(integration_step_id=11, max_instances=N, max_workers=WORKERS, pollers=POLLERS,
                              max_unclaimed=MAX_UNCLAIMED)
    def enrich(fields: dict, instance: dict) -> dict:
        return {"Venue code": f"V-{instance['IntegrationInstanceId']}", "Attendees": 42}

    enrich()


bench_batch_operator()
