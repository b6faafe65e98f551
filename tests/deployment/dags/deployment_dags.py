"""DAGs of the deployment tests (tests/deployment): run by a real scheduler, dag-processor, triggerer,
API server and executor (LocalExecutor or CeleryExecutor), against the emulator.

``deploy_deferred``: the integration sensor waits in the triggerer (deferrable), values are computed from
each instance id, a mapped completion writes them and completes the step.

``deploy_batch``: the batch worker (``@task.workflowsoft_worker``) drains step 11 in one task.

``deploy_burst``: scheduled on step 31's Asset (its watcher: four instances per event, 1 s polls); a run completes
what its events carried. ``deploy_deadline``: a deadline alert whose ``AsyncCallback`` is the notifier.
``deploy_round_trip``: one waiter: the deferrable sensor waits for the process instance given in the run's conf
(``process_instance_id``) at step 41, then its run completes that instance, writing the id it waited for.
``deploy_round_trip_worker``: a batch worker draining step 41 at the same time (``Reply`` = ``"worker"``).
``deploy_scale_out``: the batch operator mapped over the shares the run's conf asks for (``workers``, ``share``).

Knobs (read when the file is parsed, so every component sees the same): ``WFS_DEPLOY_RECLAIM_AFTER_S``
(claim lease, default 5 s: a run after a killed one takes its claims over), ``WFS_DEPLOY_BATCH_MAX``
(most instances one batch run takes, default 1000), ``WFS_DEPLOY_BATCH_WORKERS`` (default 8).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

from airflow.sdk import DAG, task

try:
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
except ImportError:  # Airflow 3.1 (tests/deployment/test_embedded_airflow31.py): not exported by airflow.sdk yet
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

from airflow_provider_workflowsoft.assets.workflowsoft import instances_from_events, integration_step_asset
from airflow_provider_workflowsoft.notifications.workflowsoft import WorkflowsoftNotifier
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

STEP = 11
CATEGORIES = ("Conference", "Workshop", "Webinar")
RECLAIM_AFTER = dt.timedelta(seconds=float(os.environ.get("WFS_DEPLOY_RECLAIM_AFTER_S", "5")))
BATCH_MAX = int(os.environ.get("WFS_DEPLOY_BATCH_MAX", "1000"))
BATCH_WORKERS = int(os.environ.get("WFS_DEPLOY_BATCH_WORKERS", "8"))


def values_for(instance_id: int) -> dict[str, Any]:
    """The field values written to an instance, computed from its id (the tests recompute them)."""
    return {
        "Venue code": f"D-{instance_id}",
        "Attendees": instance_id % 1000,
        "Event exists": instance_id % 2 == 0,
        "Category": CATEGORIES[instance_id % 3],
    }


def deployment_dag(dag_id: str, *, retries: int | None = 0, **kwargs: Any) -> DAG:
    """One of this file's DAGs: manual unless ``schedule`` is given, no catch-up, tagged; ``retries`` for its tasks
    (1 s apart; ``None``: Airflow's default); the other arguments are the DAG's."""
    if retries is not None:
        kwargs["default_args"] = {"retries": retries, **({"retry_delay": dt.timedelta(seconds=1)} if retries else {})}
    kwargs.setdefault("schedule", None)
    return DAG(dag_id=dag_id, start_date=dt.datetime(2024, 1, 1), catchup=False, tags=["workflowsoft", "deployment"],
               **kwargs)


with deployment_dag("deploy_deferred", retries=2, max_active_runs=1):
    waiting = WorkflowsoftIntegrationSensor(
        task_id="wait",
        integration_step_id=STEP,
        max_instances="{{ dag_run.conf.get('max_instances', 5) }}",
        reclaim_after=RECLAIM_AFTER,
        deferrable=True,
        poke_interval=1,
        timeout=600,
    )

    @task
    def compute(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"integration_instance_id": i["IntegrationInstanceId"],
             "fields": values_for(int(i["IntegrationInstanceId"]))}
            for i in instances
        ]

    WorkflowsoftCompleteStepOperator.partial(task_id="complete").expand_kwargs(compute(waiting.output))  # type: ignore[arg-type]


with deployment_dag("deploy_batch", max_active_runs=1):

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        integration_step_id=STEP,
        max_instances=BATCH_MAX,
        max_workers=BATCH_WORKERS,
        reclaim_after=RECLAIM_AFTER,
    )
    def burst(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        return values_for(int(instance["IntegrationInstanceId"]))

    burst()


# -- event-driven bursts: a step of its own (31, "Burst" in the deployment's scenario), four instances per event ------

BURST_STEP = 31
BURST_MAX = 4
BURST = integration_step_asset(
    BURST_STEP,
    max_instances=BURST_MAX,
    poll_interval=1,
    reclaim_after=float(os.environ.get("WFS_DEPLOY_BURST_LEASE_S", "180")),
)

with deployment_dag("deploy_burst", retries=1, schedule=[BURST]):

    @task
    def arrived(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return instances_from_events(triggering_asset_events)

    WorkflowsoftIntegrationWorkerOperator(
        task_id="complete",
        python_callable=lambda fields, instance: values_for(int(instance["IntegrationInstanceId"])),
        instances=arrived(),
        integration_step_id=BURST_STEP,
        max_workers=4,
        inlets=[BURST],
    )


# -- a deadline alert: a run still going 3 s after it was queued creates a Workflowsoft task, from the triggerer ---

with deployment_dag(
    "deploy_deadline",
    retries=None,
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(seconds=3),
        callback=AsyncCallback(WorkflowsoftNotifier, kwargs={"assignee": "ops@example.com",
                                                             "on_behalf_of": "john.doe@example.com"}),
    ),
):

    @task
    def slow() -> None:
        time.sleep(15)

    slow()


ROUND_TRIP_STEP = 41

with deployment_dag("deploy_round_trip", max_active_runs=50):
    waiting_for_mine = WorkflowsoftIntegrationSensor(
        task_id="wait",
        integration_step_id=ROUND_TRIP_STEP,
        process_instance_id="{{ dag_run.conf['process_instance_id'] }}",
        reclaim_after=dt.timedelta(seconds=60),
        deferrable=True,
        poll_interval=float(os.environ.get("WFS_DEPLOY_ROUND_TRIP_POLL_S", "3")),
        timeout=600,
    )
    WorkflowsoftCompleteStepOperator(
        task_id="complete",
        integration_instance_id="{{ ti.xcom_pull(task_ids='wait')[0]['IntegrationInstanceId'] }}",
        fields={"Reply": "waiter of {{ dag_run.conf['process_instance_id'] }}"},
    ).set_upstream(waiting_for_mine)


with deployment_dag("deploy_round_trip_worker", max_active_runs=1):

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        integration_step_id=ROUND_TRIP_STEP, max_instances=100, max_workers=4, reclaim_after=dt.timedelta(seconds=60))
    def reply(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        return {"Reply": "worker"}

    reply()


# -- scale-out: several batch workers on one step, mapped task instances spread over the Celery workers -------------
# ``deploy_scale_out`` (tests/deployment/test_distributed.py): ``shares`` reads the run's conf (``workers``, default 1;
# ``share``, the most instances one worker takes, default 2000) and returns one share per worker; the batch operator
# is mapped over them. Each map index has its own claims record, and claims are checked against the other records
# before an instance is handed over, so no instance goes to two of them.

with deployment_dag("deploy_scale_out", max_active_runs=1):

    @task
    def shares(**context: Any) -> list[int]:
        conf = context["dag_run"].conf or {}
        return [int(conf.get("share", 2000))] * int(conf.get("workers", 1))

    WorkflowsoftIntegrationWorkerOperator.partial(
        task_id="drain",
        python_callable=lambda fields, instance: values_for(int(instance["IntegrationInstanceId"])),
        integration_step_id=STEP,
        max_workers=BATCH_WORKERS,
        reclaim_after=RECLAIM_AFTER,
    ).expand(max_instances=shares())
