"""The DAG-run tests' launcher (``prefork.py``): a forked ``airflow`` behaves as the ``airflow`` script does.

What the other DAG-run tests rely on: each command sees its own environment (a connection in an ``AIRFLOW_CONN_*``
variable differs from run to run), its exit status and output reach the test, a SIGTERM reaches Airflow's own
handlers and the task's, and a SIGKILL of the process a test started kills the run at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.dag_runs.conftest import airflow_env
from tests.dag_runs.prefork import AIRFLOW_BIN, ENABLED, airflow_command

pytestmark = pytest.mark.airflow

SLEEPER_DAG = '''
import os
import signal
import time

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

with DAG("prefork_sleeper", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
    @task
    def sleep():
        got = []
        signal.signal(signal.SIGTERM, lambda *_: got.append(1))
        print("sleeper started in", os.getpid(), flush=True)
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        print("sleeper got SIGTERM" if got else "sleeper timed out", flush=True)

    sleep()
'''


def _env(home: Path, dags: Path, host: str) -> dict[str, str]:
    env = airflow_env(home, dags)
    env["AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT"] = json.dumps({"conn_type": "workflowsoft", "host": host,
                                                          "password": "demo-token"})
    return env


def _run(env: dict[str, str], *args: str, forked: bool = True) -> subprocess.CompletedProcess[str]:
    command = [*airflow_command(env)] if forked else [AIRFLOW_BIN]
    return subprocess.run([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)


def test_each_command_sees_its_own_environment_and_ends_as_the_script_does(airflow_home: Path,
                                                                         dags_folder: Path) -> None:
    first = _run(_env(airflow_home, dags_folder, "http://first.invalid"), "connections", "get",
                 "workflowsoft_default", "-o", "json")
    second = _run(_env(airflow_home, dags_folder, "http://second.invalid"), "connections", "get",
                  "workflowsoft_default", "-o", "json")
    assert first.returncode == second.returncode == 0, first.stdout[-3000:] + second.stdout[-3000:]
    assert "first.invalid" in first.stdout and "second.invalid" not in first.stdout
    assert "second.invalid" in second.stdout and "first.invalid" not in second.stdout

    env = _env(airflow_home, dags_folder, "http://first.invalid")
    forked, script = _run(env, "dags", "test", "no_such_dag"), _run(env, "dags", "test", "no_such_dag", forked=False)
    assert forked.returncode == script.returncode != 0
    assert "no_such_dag" in forked.stdout and "no_such_dag" in script.stdout


def _start_sleeper(home: Path, dags: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``airflow dags test`` of a DAG whose task sleeps; returns the process started and the pid of the task."""
    (dags / "prefork_sleeper.py").write_text(SLEEPER_DAG)
    env = _env(home, dags, "http://unused.invalid")
    with log.open("w") as out:
        process = subprocess.Popen([*airflow_command(env), "dags", "test", "prefork_sleeper"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (started := re.search(r"sleeper started in (\d+)", log.read_text())):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    return process, int(started.group(1))


def test_a_sigkill_of_the_started_process_kills_the_run(airflow_home: Path, dags_folder: Path,
                                                        tmp_path: Path) -> None:
    process, task_pid = _start_sleeper(airflow_home, dags_folder, tmp_path / "run.log")
    assert task_pid != process.pid or not ENABLED  # the run: a fork of the pre-imported Airflow, not the client
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(task_pid):
        assert time.monotonic() < deadline, "the forked run outlived the process the test killed"
        time.sleep(0.02)


def test_a_sigterm_of_the_started_process_reaches_the_run(airflow_home: Path, dags_folder: Path,
                                                          tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    process, _ = _start_sleeper(airflow_home, dags_folder, log)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "sleeper got SIGTERM" in log.read_text(), log.read_text()[-3000:]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
