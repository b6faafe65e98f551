"""Fixtures for tests that run real Airflow (``airflow dags test``) against the emulator over loopback.

One migrated SQLite ``AIRFLOW_HOME`` per test session, copied afresh for each test; every DAG run is a process
of its own, so the DAGs see exactly what a user's ``airflow dags test`` sees: the installed provider, the
connection from the environment or the database, the emulator at a real loopback address. The processes are
forks of a pre-imported Airflow (``prefork.py``: about a quarter of the CPU of a fresh ``airflow`` each);
``WFS_PREFORK=0`` runs the ``airflow`` script itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS
from tests.dag_runs.prefork import AIRFLOW_BIN, run_airflow

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
TEST_DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
#: Figures and logs of the DAG runs; a run on Airflow 2 writes beside, not over, the current Airflow's
#: (docs/reliability.md quotes the Airflow 3 figures).
OUTPUT_DIR = REPO / "tests" / "output" / ("" if AIRFLOW_V_3_0_PLUS else "airflow-2")

#: The example DAGs (dags/) and the README's code are what Airflow 3 users write (``from airflow.sdk
#: import ...``), so they run on Airflow 3 only; the test DAGs (tests/dag_runs/dags/) import from
#: ``airflow.providers.common.compat.sdk`` and run on every supported version.
needs_airflow_3_examples = pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS, reason="dags/ shows Airflow 3 imports (airflow.sdk)"
)
needs_airflow_3_readme = pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS, reason="README shows Airflow 3 imports (airflow.sdk)"
)
#: Whether ``airflow dags test`` hands a failure callback the task's exception (``context["exception"]``): Airflow
#: 2.11 and 3.3 do; the in-process supervisor of 3.0 and 3.1 leaves it out (a real task runner sets it on every
#: 3.x). A notifier's description then has no "Error:" line under ``airflow dags test`` there.
DAGS_TEST_PASSES_EXCEPTION = AIRFLOW_V_3_3_PLUS or not AIRFLOW_V_3_0_PLUS


def readme_python_block(heading: str) -> str:
    """The first python code block under a heading of README.md, as a user copies it."""
    section = (REPO / "README.md").read_text().split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"README's {heading!r} section has no python code block"
    return match.group(1)


def connection_json(emulator: EmulatorServer, **extra: Any) -> str:
    """``AIRFLOW_CONN_*`` JSON pointing at the emulator with its static API token."""
    conn: dict[str, Any] = {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token"}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def airflow_env(home: Path, dags_folder: Path = DAGS_FOLDER) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


@pytest.fixture(scope="session")
def migrated_airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AIRFLOW_HOME with SQLite migrated once per session; never run in, only copied."""
    home = tmp_path_factory.mktemp("airflow_home_migrated")
    result = subprocess.run(
        [AIRFLOW_BIN, "db", "migrate"], env=airflow_env(home), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home


@pytest.fixture
def airflow_home(migrated_airflow_home: Path) -> Path:
    """A fresh copy of the migrated AIRFLOW_HOME for each test: runs, XCom and the ledgers' Variables of
    one test never leak into the next (each emulator numbers its instances from 5001 again). Always at the same
    path in a test session, so that the pre-imported Airflow of one test serves the next (``prefork.py``)."""
    home = migrated_airflow_home.parent / "airflow_home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(migrated_airflow_home, home)
    config = home / "airflow.cfg"
    if config.exists():  # the config names its home's paths: point them at the copy
        config.write_text(config.read_text().replace(str(migrated_airflow_home), str(home)))
    return home


@pytest.fixture
def dags_folder(migrated_airflow_home: Path) -> Path:
    """An empty DAGs folder for a test's own DAG files, at the same path in a test session (see ``airflow_home``)."""
    folder = migrated_airflow_home.parent / "dags"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


RunDag = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_dag(airflow_home: Path) -> RunDag:
    """Run ``airflow dags test <dag_id>`` against an emulator; returns the finished process
    (``returncode`` 0 when the DAG run succeeded; ``stdout`` holds every log line)."""

    def run(
        dag_id: str,
        *,
        emulator: EmulatorServer,
        conf: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        dags_folder: Path | None = None,
        conn_extra: dict[str, Any] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        env = airflow_env(airflow_home, dags_folder or DAGS_FOLDER)
        env["AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT"] = connection_json(emulator, **(conn_extra or {}))
        env.update(extra_env or {})
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return run_airflow(args, env, timeout=timeout)

    return run


def assert_dag_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the end of the DAG run's output when it did not succeed."""
    assert result.returncode == 0 and "state=success" in result.stdout, result.stdout[-6000:]


def assert_dag_failed(result: subprocess.CompletedProcess[str]) -> None:
    """Fail unless the DAG run ended failed (``airflow dags test`` logs the run's final state last)."""
    finished = [line for line in result.stdout.splitlines() if "DagRun Finished" in line]
    assert result.returncode != 0 and finished and "state=failed" in finished[-1], result.stdout[-6000:]
