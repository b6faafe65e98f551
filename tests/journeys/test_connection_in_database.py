"""Journey: the README's first DAG with the deferrable sensor, the connection made with ``airflow connections add``.

The connection lives in Airflow's metadata database (as the README's CLI command and the UI store it), not in
an ``AIRFLOW_CONN_*`` variable. No instance is waiting when the DAG starts, so the sensor really defers and its
trigger reads the connection in ``airflow dags test``'s in-process triggerer; an instance arrives a little later.
"""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS
from tests.journeys.conftest import Journey

POLL_PATH = "/api/v2/workflows/instances/new-integrations"

#: The README's imports on Airflow 3; on 2.11 the ones the README's Install section names for it.
README_IMPORTS = ("from airflow.sdk import {names}" if AIRFLOW_V_3_0_PLUS
                  else "from airflow.providers.common.compat.sdk import {names}")

FIRST_DAG = '''
import pendulum
{imports}

from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def enrich_events():
    new_events = WorkflowsoftIntegrationSensor(
        task_id="wait_for_events",
        process_diagram_name="Event registration",
        integration_step_name="Enrich event",
        fetch_fields=True,
        max_instances=10,
        deferrable=True,
        poke_interval=1,
        timeout=120,
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
    )


enrich_events()
'''.replace("{imports}", README_IMPORTS.format(names="dag, task"))


def _polls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.request_log() if r["path"] == POLL_PATH)


def _create_after_deferral(emulator: EmulatorServer, stop: threading.Event) -> threading.Thread:
    """Create one instance once the trigger has polled (a second empty poll after the sensor's own one)."""

    def run() -> None:
        while not stop.is_set() and _polls(emulator) < 2:
            time.sleep(0.2)
        if not stop.is_set():
            emulator.create_instances(11, count=1, values={"Event name": "Data Summit"})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.airflow
def test_deferrable_sensor_with_a_connection_added_by_the_cli(journey: Journey, emulator: EmulatorServer) -> None:
    journey.add_connection(emulator)
    journey.write_dag("enrich_events", FIRST_DAG)
    stop = threading.Event()
    creator = _create_after_deferral(emulator, stop)
    try:
        result = journey.dags_test("enrich_events", timeout=240)
    finally:
        stop.set()
        creator.join(timeout=5)
    assert result.returncode == 0 and "state=success" in result.stdout, result.stdout[-6000:]
    assert "isn't defined" not in result.stdout
    assert "[DAG TEST] running trigger in line" in result.stdout  # it really deferred
    done = emulator.snapshot()["instances"]
    assert [(i["status"], i["fields"]["Venue code"], i["fields"]["Event exists"]) for i in done] == [
        ("completed", "HALL-DAT", True)
    ]
