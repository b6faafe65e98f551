"""The DAG-run tests' launcher (``prefork.py``): a forked ``airflow`` behaves as the ``airflow`` script does.

What the other DAG-run tests rely on: each command sees its own environment (a connection in an ``AIRFLOW_CONN_*``
variable differs from run to run), its exit status and output reach the test, a SIGTERM reaches Airflow's own
handler and the task's, a SIGKILL of the process a test started kills the run at once (sent at any moment, while the
client starts, runs or exits, it ends the run killed or with the run's own status, never some other way), and a
run killed by a signal ends its process the same way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dag_runs.conftest import airflow_env
from tests.dag_runs.prefork import (
    AIRFLOW_BIN,
    ENABLED,
    airflow_command,
    run_airflow,
    running,
    signal_run,
    start_airflow,
)

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
        if os.environ.get("PREFORK_SLEEPER_KILLS_ITSELF"):  # read when the task runs: the client's environment
            os.kill(os.getpid(), signal.SIGKILL)
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
    if forked:
        return run_airflow(list(args), env)
    return subprocess.run([AIRFLOW_BIN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)


def test_each_command_sees_its_own_environment_and_ends_as_the_script_does(airflow_home: Path,
                                                                         dags_folder: Path) -> None:
    first_env = _env(airflow_home, dags_folder, "http://first.invalid")
    second_env = _env(airflow_home, dags_folder, "http://second.invalid")
    assert airflow_command(first_env) == airflow_command(second_env)  # one server forks both
    first = _run(first_env, "connections", "get", "workflowsoft_default", "-o", "json")
    second = _run(second_env, "connections", "get", "workflowsoft_default", "-o", "json")
    assert first.returncode == second.returncode == 0, first.stdout[-3000:] + second.stdout[-3000:]
    assert "first.invalid" in first.stdout and "second.invalid" not in first.stdout
    assert "second.invalid" in second.stdout and "first.invalid" not in second.stdout

    forked = _run(first_env, "dags", "test", "no_such_dag")
    script = _run(first_env, "dags", "test", "no_such_dag", forked=False)
    assert forked.returncode == script.returncode != 0
    assert "no_such_dag" in forked.stdout and "no_such_dag" in script.stdout


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The sleeper runs a test starts, SIGKILLed at its end whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            signal_run(process, signal.SIGKILL)
            process.wait(timeout=30)


def _start_sleeper(home: Path, dags: Path, log: Path, started: list[subprocess.Popen[bytes]]
                   ) -> tuple[subprocess.Popen[bytes], int]:
    """``airflow dags test`` of a DAG whose task sleeps; returns the process started and the pid of the task."""
    (dags / "prefork_sleeper.py").write_text(SLEEPER_DAG)
    env = _env(home, dags, "http://unused.invalid")
    with log.open("w") as out:
        process = start_airflow(["dags", "test", "prefork_sleeper"], env, stdout=out)
    started.append(process)
    deadline = time.monotonic() + 120
    while not (found := re.search(r"sleeper started in (\d+)", log.read_text())):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    return process, int(found.group(1))


def test_a_sigkill_of_the_started_process_kills_the_run_at_once(airflow_home: Path, dags_folder: Path,
                                                                tmp_path: Path, sleepers: list[Any]) -> None:
    process, task_pid = _start_sleeper(airflow_home, dags_folder, tmp_path / "run.log", sleepers)
    assert task_pid != process.pid or not ENABLED  # the run: a fork of the pre-imported Airflow, not the client
    signal_run(process, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert not running(task_pid)  # dead once the test sees the process it started dead, as with the script


def test_a_run_outlives_no_client_killed_some_other_way(airflow_home: Path, dags_folder: Path, tmp_path: Path,
                                                        sleepers: list[Any]) -> None:
    process, task_pid = _start_sleeper(airflow_home, dags_folder, tmp_path / "run.log", sleepers)
    os.killpg(process.pid, signal.SIGKILL)  # the client alone (the OOM killer, a kill of its pid)
    assert process.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while running(task_pid):
        assert time.monotonic() < deadline, "the forked run outlived the process the test killed"
        time.sleep(0.02)


def test_a_sigterm_of_the_started_process_reaches_the_run(airflow_home: Path, dags_folder: Path, tmp_path: Path,
                                                          sleepers: list[Any]) -> None:
    log = tmp_path / "run.log"
    process, _ = _start_sleeper(airflow_home, dags_folder, log, sleepers)
    signal_run(process, signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "sleeper got SIGTERM" in log.read_text(), log.read_text()[-3000:]


def test_a_run_killed_by_a_signal_ends_the_started_process_the_same_way(airflow_home: Path,
                                                                        dags_folder: Path) -> None:
    (dags_folder / "prefork_sleeper.py").write_text(SLEEPER_DAG)
    env = {**_env(airflow_home, dags_folder, "http://unused.invalid"), "PREFORK_SLEEPER_KILLS_ITSELF": "1"}
    forked = _run(env, "dags", "test", "prefork_sleeper")
    script = _run(env, "dags", "test", "prefork_sleeper", forked=False)
    assert forked.returncode == script.returncode == -signal.SIGKILL, forked.stdout[-3000:] + script.stdout[-3000:]



def test_a_sigkill_as_soon_as_the_run_is_started_kills_it(airflow_home: Path, dags_folder: Path) -> None:
    env = _env(airflow_home, dags_folder, "http://unused.invalid")
    process = start_airflow(["version"], env)  # the client has not set its handlers yet
    signal_run(process, signal.SIGKILL)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, output[-3000:]


def test_a_sigkill_at_any_moment_ends_the_run_killed_or_with_its_own_status(airflow_home: Path,
                                                                            dags_folder: Path) -> None:
    # Killed while it starts, runs or exits, a run ends as a script would: by SIGKILL, or done, never another way.
    env = _env(airflow_home, dags_folder, "http://unused.invalid")
    _run(env, "version")  # the server is started and warm
    started = time.monotonic()
    done = _run(env, "version")
    length = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:]
    codes = []
    for step in range(12):
        process = start_airflow(["version"], env)
        time.sleep(length * step / 8)  # up to 1.4 times a whole run: into its exit and beyond
        signal_run(process, signal.SIGKILL)
        output, _ = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), (step, process.returncode, output[-3000:])
        assert process.returncode != 0 or done.stdout.strip().splitlines()[-1] in output, output[-3000:]
        codes.append(process.returncode)
    assert codes[0] == -signal.SIGKILL, codes
