"""``reliability_sensor_lease``: a sensor hands its instances to a slow batch worker.

Used by tests/dag_runs/test_sensor_lease.py.

gate -> sensor (poke, or deferrable with ``RELIABILITY_DEFERRABLE=1``) -> ``@task.workflowsoft_worker`` given the
sensor's XCom, whose callable takes ``RELIABILITY_WORK_S`` per instance against a lease of ``RELIABILITY_LEASE_S``.
The gate waits for the file ``RELIABILITY_START_FILE`` and then until the time it holds (epoch seconds), so two runs
drain at the distance the test chooses. Each call is logged (``called <id>``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=float(os.environ.get("RELIABILITY_LEASE_S", "3")))
WORK_SECONDS = float(os.environ.get("RELIABILITY_WORK_S", "4.2"))

with DAG(
    dag_id="reliability_sensor_lease",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 0},
    tags=["workflowsoft", "reliability"],
):

    @task
    def gate() -> None:
        gate_file = Path(os.environ.get("RELIABILITY_START_FILE") or "")
        log.warning("at the gate")
        while not gate_file.is_file() or not gate_file.read_text().strip():
            time.sleep(0.05)
        time.sleep(max(0.0, float(gate_file.read_text()) - time.time()))

    new_events = WorkflowsoftIntegrationSensor(
        task_id="new_events",
        integration_step_id=11,
        max_instances=int(os.environ.get("RELIABILITY_SENSOR_INSTANCES", "8")),
        reclaim_after=LEASE,
        deferrable=os.environ.get("RELIABILITY_DEFERRABLE") == "1",
        poke_interval=0.5,
        poll_interval=0.5,
        timeout=120,
    )

    @task.workflowsoft_worker(  # type: ignore[attr-defined]
        max_workers=4,
        reclaim_after=LEASE,
        progress_interval=None,
    )
    def slow(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        log.warning("called %s", instance["IntegrationInstanceId"])
        time.sleep(WORK_SECONDS)
        return {"Venue code": f"V-{instance['IntegrationInstanceId']}"}

    gate() >> new_events >> slow(instances=new_events.output)
