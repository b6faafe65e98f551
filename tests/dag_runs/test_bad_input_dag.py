"""Bad input fails a real task without retries, the error and its message in the task's log."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer

from .conftest import TEST_DAGS_FOLDER, RunDag, assert_dag_failed

pytestmark = pytest.mark.airflow


def test_bad_input_fails_the_task_without_retries(run_dag: RunDag, emulator: EmulatorServer) -> None:
    result = run_dag("workflowsoft_bad_input", emulator=emulator, dags_folder=Path(TEST_DAGS_FOLDER))
    assert_dag_failed(result)
    log = result.stdout
    assert "AirflowFailException" in log and "integration_instance_id must be an integer id" in log, log[-6000:]
    assert "WorkflowsoftInputError" in log  # the original error, shown as the cause
    assert "up_for_retry" not in log.lower(), log[-6000:]
