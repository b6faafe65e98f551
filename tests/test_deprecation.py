"""Old names keep working with Airflow's provider deprecation warning, pointed at the user's line."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger


def _only_warning(record: pytest.WarningsRecorder) -> object:
    ours = [w for w in record if issubclass(w.category, AirflowProviderDeprecationWarning)]
    assert len(ours) == 1, [str(w.message) for w in record]
    return ours[0]


def test_a_renamed_class_warns_at_the_callers_line() -> None:
    from airflow_provider_workflowsoft.operators.batch import WorkflowsoftProcessInstancesOperator

    with pytest.warns(AirflowProviderDeprecationWarning) as record:
        WorkflowsoftProcessInstancesOperator(task_id="old", python_callable=lambda fields: None,
                                             integration_step_id=11)
    warning = _only_warning(record)
    assert "use WorkflowsoftIntegrationWorkerOperator" in str(warning.message)  # type: ignore[attr-defined]
    assert warning.filename == __file__  # type: ignore[attr-defined]  # not Airflow's BaseOperator machinery


def test_a_renamed_argument_warns_at_the_callers_line() -> None:
    from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

    with pytest.warns(AirflowProviderDeprecationWarning, match=r"integration_diagram_id=\.\.\.\) is deprecated") \
            as record:
        WorkflowsoftIntegrationSensor(task_id="wait", integration_diagram_id=11)
    assert _only_warning(record).filename == __file__  # type: ignore[attr-defined]


def test_the_hook_and_clients_poll_with_the_old_keyword_warning_at_the_callers_line(emu: Any) -> None:
    import asyncio

    from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
    from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

    hook = WorkflowsoftHook()
    instance = hook.poll_new_integration(integration_step_id=11)  # the demo has no new instance: None
    with pytest.warns(AirflowProviderDeprecationWarning,
                      match=r"poll_new_integration\(integration_diagram_id=\.\.\.\) is deprecated") as record:
        assert hook.poll_new_integration(integration_diagram_id=11) == instance
    assert _only_warning(record).filename == __file__  # type: ignore[attr-defined]

    async def poll_async() -> Any:
        async with AsyncWorkflowsoftClient(hook.client.config) as client:
            return await client.poll_new_integration(integration_diagram_id=11)

    with pytest.warns(AirflowProviderDeprecationWarning, match="use integration_step_id"):
        assert asyncio.run(poll_async()) == instance


def test_the_engine_takes_the_old_keyword_and_list_claims_shows_both_keys() -> None:
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger
    from airflow_provider_workflowsoft.records.stores import MemoryStore
    from airflow_provider_workflowsoft.worker.engine import WorkerEngine

    claims = ClaimsLedger("workflowsoft_default", MemoryStore())
    with pytest.warns(AirflowProviderDeprecationWarning, match=r"WorkerEngine\(integration_diagram_id=\.\.\.\)"):
        engine = WorkerEngine(object(), lambda fields: None, integration_diagram_id=11, claims=claims)  # type: ignore[arg-type]
    assert engine.integration_step_id == 11
    with pytest.warns(AirflowProviderDeprecationWarning, match="integration_diagram_id is deprecated"):
        assert engine.integration_diagram_id == 11  # the 0.4 attribute
    claims.claim(11, [{"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}])
    [entry] = claims.list_claims(11)
    assert entry["integration_step_id"] == entry["integration_diagram_id"] == 11


def test_the_engine_s_0_4_name_warns_and_builds_the_same_engine() -> None:
    from airflow_provider_workflowsoft.worker.engine import BatchEngine, WorkerEngine

    with pytest.warns(AirflowProviderDeprecationWarning, match="BatchEngine is deprecated: use WorkerEngine"):
        engine = BatchEngine(object(), lambda fields: None, integration_step_id=11)  # type: ignore[arg-type]
    assert isinstance(engine, WorkerEngine) and engine.integration_step_id == 11


@pytest.mark.parametrize(("module", "name"), [("airflow_provider_workflowsoft.errors", "WorkflowsoftError"),
                                              ("airflow_provider_workflowsoft.ledger", "ClaimsLedger")])
def test_old_modules_warn_and_still_work(module: str, name: str) -> None:
    sys.modules.pop(module, None)
    with pytest.warns(AirflowProviderDeprecationWarning, match="is deprecated: import from"):
        old = importlib.import_module(module)
    assert getattr(old, name) is not None


@pytest.mark.parametrize(("module", "name", "new"), [
    ("airflow_provider_workflowsoft.operators.workflowsoft", "WorkflowsoftIntegrationWorkerOperator",
     "airflow_provider_workflowsoft.operators.batch"),
    ("airflow_provider_workflowsoft.operators.batch", "BatchEngine", "airflow_provider_workflowsoft.worker.engine"),
])
def test_re_exported_names_warn_and_still_work(module: str, name: str, new: str) -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match=f"import it from {new}"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(importlib.import_module(new), name)


def test_the_warning_is_shown_without_warning_options(tmp_path: Path) -> None:
    """A DAG file run as a plain script shows the warning and its own line (Python hides a DeprecationWarning
    raised outside ``__main__`` unless a filter shows it)."""
    dag_file = tmp_path / "old_dag.py"
    dag_file.write_text(textwrap.dedent("""\
        import airflow_provider_workflowsoft.operators.batch as batch
        batch.WorkflowsoftProcessInstancesOperator(task_id="x", python_callable=print, integration_step_id=11)
    """))
    done = subprocess.run([sys.executable, str(dag_file)], capture_output=True, text=True, timeout=120)
    shown = done.stdout + done.stderr  # Airflow's logging prints captured warnings
    assert done.returncode == 0, shown[-3000:]
    assert "WorkflowsoftProcessInstancesOperator is deprecated" in shown, shown[-3000:]
    assert "WorkflowsoftDeprecationWarning" in shown, shown[-3000:]
    # Airflow 3 logs it through structlog, Airflow 2.11 prints "<file>:<line> <category>: <message>"
    assert f"filename={dag_file} lineno=2" in shown or f"{dag_file}:2" in shown, shown[-3000:]


def test_xcom_types_is_removed_not_left_to_drift() -> None:
    # It was imported by nothing and had drifted from the XCom values; the README's rows give the shapes.
    assert importlib.util.find_spec("airflow_provider_workflowsoft.xcom_types") is None


def test_0_1_names_still_work_with_a_deprecation_warning() -> None:
    from airflow_provider_workflowsoft.operators.batch import (
        WorkflowsoftIntegrationWorkerOperator,
        WorkflowsoftProcessInstancesOperator,
    )

    with pytest.warns(DeprecationWarning, match="integration_step_id"):
        sensor = WorkflowsoftIntegrationSensor(task_id="old_name", integration_diagram_id=11)
    assert sensor.integration_step_id == 11
    with pytest.warns(DeprecationWarning, match=r"WorkflowsoftIntegrationSensor.integration_diagram_id is deprecated"):
        assert sensor.integration_diagram_id == 11
    with pytest.warns(DeprecationWarning, match="WorkflowsoftIntegrationWorkerOperator"):
        worker = WorkflowsoftProcessInstancesOperator(task_id="old_worker", python_callable=lambda f: None,
                                                      integration_step_id=11)
    assert isinstance(worker, WorkflowsoftIntegrationWorkerOperator)
    with pytest.warns(DeprecationWarning, match="integration_step_id"):
        trigger = WorkflowsoftIntegrationTrigger(integration_diagram_id=11)
    assert trigger.serialize()[1]["integration_step_id"] == 11
    with pytest.warns(DeprecationWarning, match="use workflowsoft_conn_id"):
        assert trigger.conn_id == "workflowsoft_default"
    with pytest.raises(WorkflowsoftInputError, match="both integration_step_id=12 and integration_diagram_id=11"), \
            pytest.warns(DeprecationWarning):
        WorkflowsoftIntegrationSensor(task_id="both", integration_step_id=12, integration_diagram_id=11)
