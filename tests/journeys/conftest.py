"""Journeys: DAGs written from the README alone, run the way a newcomer runs them.

The connection is made the README's way, with ``airflow connections add`` (stored in Airflow's metadata
database, as the UI stores it), never through an ``AIRFLOW_CONN_*`` variable; the DAG runs with
``airflow dags test`` in a subprocess against the emulator over loopback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from tests.dag_runs.conftest import (  # noqa: F401 - the Airflow home fixtures, shared with tests/dag_runs
    airflow_env,
    airflow_home,
    dags_folder,
    migrated_airflow_home,
)
from tests.dag_runs.prefork import run_airflow


class Journey:
    """One newcomer's Airflow home: connections added with the CLI, DAG files written from the README."""

    def __init__(self, home: Path, dags: Path) -> None:
        self.home = home
        self.dags = dags

    def env(self, **extra: str) -> dict[str, str]:
        env = airflow_env(self.home, self.dags)
        env.update(extra)
        return env

    def airflow(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command in this home; stdout and stderr together."""
        env = self.env(**extra_env)
        return run_airflow(list(args), env, timeout=timeout)

    def add_connection(self, emulator: EmulatorServer, conn_id: str = "workflowsoft_default", *,
                       password: str = "demo-token", extra: dict[str, Any] | None = None) -> None:
        """``airflow connections add`` exactly as the README shows it, pointed at the emulator."""
        args = ["connections", "add", conn_id, "--conn-type", "workflowsoft", "--conn-host", emulator.base_url,
                "--conn-port", str(emulator.port), "--conn-password", password]
        if extra is not None:
            args += ["--conn-extra", json.dumps(extra)]
        result = self.airflow(*args)
        assert result.returncode == 0, result.stdout[-3000:]

    def write_dag(self, name: str, source: str) -> Path:
        path = self.dags / f"{name}.py"
        path.write_text(source)
        return path

    def dags_test(self, dag_id: str, *, conf: dict[str, Any] | None = None, timeout: float = 300,
                  **extra_env: str) -> subprocess.CompletedProcess[str]:
        """``airflow dags test <dag_id>``; returncode 0 and ``state=success`` when the run succeeded."""
        args = ["dags", "test", dag_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return self.airflow(*args, timeout=timeout, **extra_env)


@pytest.fixture
def journey(airflow_home: Path, dags_folder: Path) -> Journey:  # noqa: F811 - the fixtures imported above
    """A fresh Airflow home (migrated SQLite) with an empty DAGs folder and no connection yet."""
    return Journey(airflow_home, dags_folder)
