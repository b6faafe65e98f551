"""The batch worker under real Airflow (``airflow dags test``) as a long-running job worker.

* Work longer than the lease: lease (``reclaim_after``) 3 s, 4.2 s per instance, 8 instances, 4 workers, a second run
  of the same DAG draining 4.2 s after the first claimed them (the issue's 10 s / 14 s case at the same ratios): the
  second run re-offers nothing, the callable runs once per instance, nothing answers "already completed".
* A worker SIGKILLed mid-instance: its claims (renewed while it lived) come back to the next run after the lease.
* A real SIGTERM to the task's process (what Airflow's supervisor sends on a task timeout, a task marked failed, a
  worker's shutdown): the instances in flight are finished, those not started are handed back and the next run
  takes them at once (lease 1 hour), nothing done twice.

The DAG is ``reliability_lease`` (tests/dag_runs/dags/reliability_dags.py): a gate task waits until the test opens it
(a file holding the time to start at), so the runs drain at the distance the test chooses whatever their start-up.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dag_runs.prefork import signal_run, start_airflow
from tests.dag_runs.test_reliability import Home, completions_by_instance, token_conn

pytestmark = pytest.mark.airflow

STEP = 11
LEASE_S = 3.0
WORK_S = 4.2  # 1.4 leases, as 14 s against 10 s


@pytest.fixture
def home(airflow_home: Path) -> Home:
    return Home(airflow_home)


class Run:
    """One ``airflow dags test reliability_lease`` in the background, its output in a file."""

    def __init__(self, home: Home, emulator: EmulatorServer, name: str, logical_date: str,
                 dag_id: str = "reliability_lease", **env: str) -> None:
        self.gate = home.path / f"gate-{name}"
        self.log = home.path / f"run-{name}.log"
        settings = {"RELIABILITY_LEASE_S": str(LEASE_S), "RELIABILITY_WORK_S": str(WORK_S),
                    "RELIABILITY_START_FILE": str(self.gate), **env}
        env = home.env(token_conn(emulator), settings)
        with self.log.open("w") as out:
            self.process = start_airflow(["dags", "test", dag_id, logical_date], env, stdout=out)

    def open_gate(self, at: float | None = None) -> None:
        self.gate.write_text(str(time.time() if at is None else at))

    def output(self) -> str:
        return self.log.read_text()

    def calls(self) -> list[int]:
        return [int(i) for i in re.findall(r"called (\d+)", self.output())]

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        return self.process.wait(timeout=timeout), self.output()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            signal_run(self.process, sig)


@contextmanager
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    try:
        yield started
    finally:
        for run in started:
            run.kill()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_two(home: Home, emulator: EmulatorServer, started: list[Run], dag_id: str = "reliability_lease",
              **env: str) -> tuple[Run, Run]:
    """Two runs waiting at their gates. The second starts once the first has registered the DAGs in the fresh
    database (two ``airflow dags test`` inserting the same DAG rows at once collide); its start-up then overlaps
    the first's wait."""
    first_env = {k[len("first_"):]: v for k, v in env.items() if k.startswith("first_")}
    second_env = {k[len("second_"):]: v for k, v in env.items() if k.startswith("second_")}
    shared = {k: v for k, v in env.items() if not k.startswith(("first_", "second_"))}
    first = Run(home, emulator, "first", "2026-01-01T00:00:00+00:00", dag_id, **shared, **first_env)
    started.append(first)
    wait_for(lambda: "starting task_id=gate" in first.output() or first.process.poll() is not None, "the first run")
    second = Run(home, emulator, "second", "2026-01-02T00:00:00+00:00", dag_id, **shared, **second_env)
    started.append(second)
    for run in (first, second):
        wait_for(lambda r=run: "at the gate" in r.output(), "the runs to reach their gate")  # type: ignore[misc]
    return first, second


def handed_out(emulator: EmulatorServer) -> int:
    return sum(1 for i in emulator.snapshot()["instances"] if i["handed_out_count"])


def completed(emulator: EmulatorServer) -> int:
    return sum(1 for i in emulator.snapshot()["instances"] if i["status"] == "completed")


def test_work_longer_than_the_lease_is_not_offered_to_a_second_run(home: Home) -> None:
    with EmulatorServer() as emulator, runs() as started:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=8)]
        first, second = start_two(home, emulator, started)
        first.open_gate()
        wait_for(lambda: handed_out(emulator) == 8, "the first run to poll the 8 instances")
        polled_at = time.time()
        second.open_gate(polled_at + WORK_S)  # drains 1.4 leases after the first run's claims
        wait_for(lambda: "Drained" in second.output() or second.process.poll() is not None, "the second drain")
        # the case the test is about: the second run drained while the first still worked, past the claims' lease
        assert time.time() - polled_at > LEASE_S and completed(emulator) < 8
        code_second, out_second = second.wait()
        code_first, out_first = first.wait()
    assert code_first == 0 and "state=success" in out_first, out_first[-6000:]
    assert code_second == 0 and "state=success" in out_second, out_second[-6000:]
    assert sorted(first.calls()) == ids and second.calls() == []  # the callable ran once per instance
    assert "Re-offering" not in out_second and "already completed" not in out_first + out_second
    assert completions_by_instance(emulator.request_log()) == {i: 1 for i in ids}
    assert home.claim_records() == {}


def test_a_worker_killed_mid_instance_gives_its_claims_back_after_the_lease(home: Home) -> None:
    with EmulatorServer() as emulator, runs() as started:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=8)]
        first, second = start_two(home, emulator, started, second_RELIABILITY_WORK_S="0")
        first.open_gate()
        wait_for(lambda: len(first.calls()) == 4, "4 instances in flight")
        time.sleep(LEASE_S / 3 + 0.5)  # at least one renewal
        first.kill()  # SIGKILL mid-instance: nothing completed, 8 claims renewed while it lived
        code, _ = first.wait()
        assert code == -signal.SIGKILL and completed(emulator) == 0
        killed_at = time.time()
        (record,) = home.claim_records().values()
        assert sorted(int(i) for i in record["claims"]) == ids
        assert all("renewed_at" in claim for claim in record["claims"].values())
        second.open_gate(killed_at + LEASE_S + 0.5)  # it drains once the lease since the last renewal is over
        code, out = second.wait()
    assert code == 0 and "state=success" in out, out[-6000:]
    assert "Re-offering" in out and sorted(second.calls()) == ids
    assert completions_by_instance(emulator.request_log()) == {i: 1 for i in ids}
    assert home.claim_records() == {}


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS,
                    reason="graceful stop is Airflow 3's on_kill path; Airflow 2.11's task runner raises "
                           "AirflowTaskTerminated in the task instead (the claims still come back after the lease)")
def test_sigterm_finishes_what_is_in_flight_and_hands_back_the_rest_to_the_next_run_at_once(home: Home) -> None:
    hour = {"RELIABILITY_LEASE_S": "3600", "RELIABILITY_BATCH_WORKERS": "2", "RELIABILITY_GRACE_S": "20"}
    with EmulatorServer() as emulator, runs() as started:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=8)]
        first, second = start_two(home, emulator, started, **hour, first_RELIABILITY_WORK_S="2",
                                  second_RELIABILITY_WORK_S="0")
        first.open_gate()
        wait_for(lambda: len(first.calls()) == 2, "2 instances in flight")
        os.kill(first.process.pid, signal.SIGTERM)  # a SIGTERM to the process started (the run gets it)
        code, out = first.wait()
        in_flight = first.calls()
        assert code != 0 and "The batch worker was stopped (SIGTERM)" in out, out[-6000:]
        assert completed(emulator) == len(in_flight) == 2  # what was in flight was finished
        handed = re.search(r"(\d+) not started handed back", out)
        assert handed and int(handed.group(1)) >= 1, out[-6000:]
        second.open_gate()
        code, out_second = second.wait()
    # lease 1 hour: only the hand-back lets the next run take them now
    assert code == 0 and "state=success" in out_second, out_second[-6000:]
    assert sorted(in_flight + second.calls()) == ids
    assert completions_by_instance(emulator.request_log()) == {i: 1 for i in ids}
    assert home.claim_records() == {}
