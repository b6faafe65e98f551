"""DAGs of the reliability tests (tests/dag_runs/test_reliability.py).

``reliability_process``: the sensor takes new "Enrich event" instances (step 11 of the demo scenario), a
gate task may crash the whole run (``conf.crash``) or log a control string (``conf.control``), values are
computed from each instance id, and a mapped completion writes them and completes the step.

``reliability_creates``: starts a process and creates a task, both through the create ledger.

Knobs: ``conf.max_instances`` (sensor), env ``RELIABILITY_RECLAIM_AFTER_S`` (claim lease, read when the
file is parsed), env ``RELIABILITY_TASK_RETRIES``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, get_current_context, task

from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftStartProcessOperator,
)
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

log = logging.getLogger(__name__)

CATEGORIES = ("Conference", "Workshop", "Webinar")
RETRIES = int(os.environ.get("RELIABILITY_TASK_RETRIES", "4"))
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("RELIABILITY_RETRY_DELAY_S", "1")))
RECLAIM_AFTER = dt.timedelta(seconds=float(os.environ.get("RELIABILITY_RECLAIM_AFTER_S", "3600")))


def reliability_dag(dag_id: str, default_args: dict[str, Any]) -> DAG:
    """Make a DAG of this file: run by hand only (``airflow dags test``), with its own retries."""
    return DAG(dag_id=dag_id, schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False,
               default_args=default_args, tags=["workflowsoft", "reliability"])


def values_for(instance_id: int) -> dict[str, Any]:
    """The field values written to an instance, computed from its id (the test recomputes them)."""
    return {
        "Venue code": f"V-{instance_id}",
        "Attendees": instance_id % 1000,
        "Event exists": instance_id % 2 == 0,
        "Category": CATEGORIES[instance_id % 3],
    }


with reliability_dag("reliability_process", {"retries": RETRIES, "retry_delay": RETRY_DELAY}):
    taken = WorkflowsoftIntegrationSensor(
        task_id="take",
        integration_diagram_id=11,
        max_instances="{{ dag_run.conf.get('max_instances', 100) }}",
        reclaim_after=RECLAIM_AFTER,
        mode="poke",
        poke_interval=1,
        timeout=60,
    )

    @task
    def gate(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        conf = get_current_context()["dag_run"].conf or {}
        if conf.get("control"):
            # Planted on purpose, so the token search of the tests is shown to find what is there.
            log.info("control string: %s", conf["control"])
        if conf.get("crash"):
            log.warning("crashing the run on purpose after the sensor took %d instance(s)", len(instances))
            os._exit(137)
        return instances

    @task
    def compute(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        conf = get_current_context()["dag_run"].conf or {}
        out = [
            {
                "integration_instance_id": i["IntegrationInstanceId"],
                "fields": values_for(int(i["IntegrationInstanceId"])),
            }
            for i in instances
        ]
        if conf.get("control"):
            out[0]["control"] = conf["control"]  # into XCom as well (the metadata database)
        return out

    @task
    def kwargs_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"integration_instance_id": i["integration_instance_id"], "fields": i["fields"]} for i in items]

    WorkflowsoftCompleteStepOperator.partial(task_id="complete").expand_kwargs(kwargs_of(compute(gate(taken.output))))  # type: ignore[arg-type]


with reliability_dag("reliability_creates", {"retries": 2, "retry_delay": dt.timedelta(seconds=0)}):
    WorkflowsoftStartProcessOperator(
        task_id="start_process",
        process_diagram_name="Customer follow-up",
        on_behalf_of="john.doe@example.com",
        fields={"Customer": "ACME Corp"},
    )
    WorkflowsoftCreateTaskOperator(
        task_id="create_task",
        title="Call the new customer",
        assignee="ops@example.com",
        on_behalf_of="john.doe@example.com",
    )


BATCH_INSTANCES = int(os.environ.get("RELIABILITY_BATCH_INSTANCES", "300"))
BATCH_WORKERS = int(os.environ.get("RELIABILITY_BATCH_WORKERS", "8"))
BATCH_MAX_UNCLAIMED = int(os.environ["RELIABILITY_BATCH_MAX_UNCLAIMED"]) if os.environ.get(
    "RELIABILITY_BATCH_MAX_UNCLAIMED") else None

with reliability_dag("reliability_batch", {"retries": 0}):

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        integration_step_id=11,
        max_instances=BATCH_INSTANCES,
        max_workers=BATCH_WORKERS,
        max_unclaimed=BATCH_MAX_UNCLAIMED,
        reclaim_after=RECLAIM_AFTER,
    )
    def burst(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        return values_for(int(instance["IntegrationInstanceId"]))

    burst()


# ``reliability_scale_out``: the README's scale-out pattern, mapped batch workers on one step
# (tests/dag_runs/test_batch_scale_out.py): the operator mapped over ``max_instances`` (one share per map index), then
# the decorator mapped over a keyword of its function. Each map index has its own claims record.
SCALE_OUT_WORKERS = int(os.environ.get("RELIABILITY_SCALE_OUT_WORKERS", "3"))
SCALE_OUT_SHARE = int(os.environ.get("RELIABILITY_SCALE_OUT_SHARE", "10"))


def scale_out_values(fields: dict[str, Any], instance: dict[str, Any], **_: Any) -> dict[str, Any]:
    return values_for(int(instance["IntegrationInstanceId"]))


with reliability_dag("reliability_scale_out", {"retries": 0}):
    mapped = WorkflowsoftIntegrationWorkerOperator.partial(
        task_id="mapped_operator", python_callable=scale_out_values, integration_step_id=11, max_workers=4,
        reclaim_after=RECLAIM_AFTER,
    ).expand(max_instances=[SCALE_OUT_SHARE] * SCALE_OUT_WORKERS)

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        integration_step_id=11, max_instances=SCALE_OUT_SHARE, max_workers=4, reclaim_after=RECLAIM_AFTER)
    def mapped_decorator(fields: dict[str, Any], instance: dict[str, Any], worker: int) -> dict[str, Any]:
        return values_for(int(instance["IntegrationInstanceId"]))

    mapped >> mapped_decorator.expand(worker=list(range(SCALE_OUT_WORKERS)))


# ``reliability_lease``: a slow callable against a short lease (tests/dag_runs/test_batch_lease.py). A gate task
# waits for the file ``RELIABILITY_START_FILE`` and then until the time it holds (epoch seconds), so two runs drain
# at the distance the test chooses whatever their start-up takes. Each call is logged (``called <id>``).
LEASE_SECONDS = float(os.environ.get("RELIABILITY_LEASE_S", "3"))
WORK_SECONDS = float(os.environ.get("RELIABILITY_WORK_S", "4.2"))

with reliability_dag("reliability_lease", {"retries": 0}):

    @task
    def gate() -> None:
        gate_file = Path(os.environ.get("RELIABILITY_START_FILE") or "")
        log.warning("at the gate")
        while not gate_file.is_file() or not gate_file.read_text().strip():
            time.sleep(0.05)
        time.sleep(max(0.0, float(gate_file.read_text()) - time.time()))

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        integration_step_id=11,
        max_instances=int(os.environ.get("RELIABILITY_BATCH_INSTANCES", "8")),
        max_workers=int(os.environ.get("RELIABILITY_BATCH_WORKERS", "4")),
        reclaim_after=dt.timedelta(seconds=LEASE_SECONDS),
        grace_period=float(os.environ.get("RELIABILITY_GRACE_S", "3")),
        progress_interval=None,
    )
    def slow(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        log.warning("called %s", instance["IntegrationInstanceId"])
        time.sleep(WORK_SECONDS)
        return values_for(int(instance["IntegrationInstanceId"]))

    gate() >> slow()
