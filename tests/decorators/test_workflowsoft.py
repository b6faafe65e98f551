"""``@task.workflowsoft_worker`` as a DAG file uses it: the task it builds, its arguments, and a run of that task
against the emulator over loopback (the report is the task's return value)."""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.records.stores import MemoryStore
from tests.conftest import FakeTI

STEP = 11
CONN = "ws_decorated"


@pytest.fixture
def conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token"}))
    return CONN


def _dag() -> DAG:
    return DAG("decorated_worker", schedule=None, start_date=pendulum.datetime(2026, 1, 1))


def test_a_decorated_function_runs_once_per_instance_with_the_task_s_keyword_arguments(
        emulator: EmulatorServer, conn: str) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=3)]
    calls: list[int] = []
    with _dag() as dag:
        @task.workflowsoft_worker(integration_step_id=STEP, max_workers=2, workflowsoft_conn_id=conn,
                                  ledger_store=MemoryStore())
        def enrich(fields: dict[str, Any], instance: dict[str, Any], venue_prefix: str) -> dict[str, Any]:
            calls.append(instance["IntegrationInstanceId"])
            return {"Venue code": f"{venue_prefix}-{instance['IntegrationInstanceId']}"}

        enrich(venue_prefix="V")
    worker = dag.get_task("enrich")
    assert isinstance(worker, WorkflowsoftIntegrationWorkerOperator)
    assert worker.op_kwargs == {"venue_prefix": "V"} and worker.max_workers == 2

    report = worker.execute({"ti": FakeTI("enrich", dag_id="decorated_worker")})

    assert sorted(calls) == sorted(created)  # once per instance, not once per task
    assert report["processed"] == 3 and sorted(report["succeeded"]) == sorted(created)
    views = {i["IntegrationInstanceId"]: i for i in emulator.snapshot()["instances"]}
    assert all(views[iid]["status"] == "completed" and views[iid]["fields"]["Venue code"] == f"V-{iid}"
               for iid in created)


def test_instances_given_to_the_call_feed_the_worker_not_the_function() -> None:
    with _dag() as dag:
        @task.workflowsoft_worker(integration_step_id=STEP)
        def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> None:
            return None

        enrich(instances=[5001, 5002])
    worker = dag.get_task("enrich")
    assert worker.instances == [5001, 5002] and "instances" not in worker.op_kwargs


def test_positional_arguments_are_refused_when_the_dag_is_parsed() -> None:
    with _dag(), pytest.raises(TypeError, match="keyword arguments only"):
        @task.workflowsoft_worker(integration_step_id=STEP)
        def enrich(fields: dict[str, Any], venue_prefix: str) -> None:
            return None

        enrich("V")


def test_a_missing_keyword_argument_of_the_function_is_refused_when_the_dag_is_parsed() -> None:
    with _dag(), pytest.raises(TypeError, match="venue_prefix"):
        @task.workflowsoft_worker(integration_step_id=STEP)
        def enrich(fields: dict[str, Any], instance: dict[str, Any], venue_prefix: str) -> None:
            return None

        enrich()
