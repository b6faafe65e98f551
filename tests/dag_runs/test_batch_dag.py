"""The batch worker operator and ``@task.workflowsoft_worker`` in a real ``airflow dags test`` run."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS

from .conftest import TEST_DAGS_FOLDER, RunDag, assert_dag_succeeded

pytestmark = pytest.mark.airflow


def test_batch_worker_dag_completes_every_instance(run_dag: RunDag, emulator: EmulatorServer) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(11, count=8)]
    result = run_dag("workflowsoft_batch_worker", emulator=emulator, dags_folder=Path(TEST_DAGS_FOLDER))
    assert_dag_succeeded(result)
    # The DAG uses the 0.1 names: Airflow 3.3's airflow dags test shows their warnings, at the DAG file's line.
    # Before 3.3 its output does not (seen with 3.1.8; 2.11 keeps them for the UI's DAG warnings); ``python <dag
    # file>`` shows them on every version (docs/upgrading.md).
    if AIRFLOW_V_3_3_PLUS:
        warned = [line for line in result.stdout.splitlines() if "is deprecated" in line]
        assert any("WorkflowsoftProcessInstancesOperator is deprecated" in line and "batch_worker_dag.py" in line
                   for line in warned), warned
    print(*(line for line in result.stdout.splitlines() if "Processed" in line), sep="\n")
    views = {i["IntegrationInstanceId"]: i for i in emulator.snapshot()["instances"]}
    for position, iid in enumerate(sorted(created)):
        view = views[iid]
        assert view["status"] == "completed", view
        if position < 3:  # the operator took the first three (the poll hands out the oldest first)
            assert view["fields"]["Venue code"] == f"OP-{iid}"
            assert view["fields"]["Attendees"] == len("Event Test")
        else:
            assert view["fields"]["Venue code"] == f"DEC-{iid}"
            assert view["fields"]["Category"] == "Workshop"
    assert "Processed 3 integration instance(s)" in result.stdout
    assert "Processed 5 integration instance(s)" in result.stdout
