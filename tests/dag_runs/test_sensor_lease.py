"""A sensor's instances handed to downstream work longer than the lease, under real Airflow (``airflow dags test``).

The DAG ``reliability_sensor_lease`` (tests/dag_runs/dags/sensor_lease_dag.py): gate -> sensor -> batch worker given
the sensor's XCom, lease (``reclaim_after``) 3 s, 4.2 s per instance, 8 instances, 4 workers (the issue's 10 s / 14 s
case at the same ratios). The sensor's claims are held by its run until their completion: the check while it drains,
in deferrable mode the trigger until its event and the resumed task, then the batch worker, which takes them over and
renews them while it works.

* A second run of the DAG draining past the lease while the first run's batch worker works re-offers nothing, takes
  only what is new, and nothing is done twice (poke and deferrable).
* The batch worker SIGKILLed mid-instance: the sensor's instances come back to the next run after the lease.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS
from tests.dag_runs.test_batch_lease import (
    LEASE_S,
    completed,
    handed_out,
    runs,
    start_two,
    wait_for,
)
from tests.dag_runs.test_reliability import Home, completions_by_instance

pytestmark = pytest.mark.airflow

STEP = 11
DAG_ID = "reliability_sensor_lease"
POLL_PATH = "/api/v2/workflows/instances/new-integrations"


@pytest.fixture
def home(airflow_home: Path) -> Home:
    return Home(airflow_home)


def open_claims(home: Home) -> set[str]:
    """Claims no record has done: what a later run would offer again (the sensor's closed record keeps its resolved
    claims until the next check tidies it, docs/reliability.md)."""
    records = home.claim_records().values()
    done = {i for r in records for i in r.get("done", {})}
    return {i for r in records for i in r.get("claims", {}) if i not in done}


def polls(emulator: EmulatorServer) -> int:
    return sum(1 for r in emulator.request_log() if r["path"] == POLL_PATH)


@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_downstream_work_longer_than_the_lease_is_not_offered_to_a_second_run(home: Home, deferrable: bool) -> None:
    if deferrable and not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the trigger claims in the task instance's record from Airflow 3.3 on")
    mode = {"RELIABILITY_DEFERRABLE": "1" if deferrable else "0"}
    with EmulatorServer() as emulator, runs() as started:
        first, second = start_two(home, emulator, started, DAG_ID, **mode, second_RELIABILITY_SENSOR_INSTANCES="10",
                                  second_RELIABILITY_WORK_S="0")
        first.open_gate()
        if deferrable:  # the instances arrive while the trigger waits: the trigger claims them
            wait_for(lambda: polls(emulator) >= 3, "the first run's trigger to poll")
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=10)]
        wait_for(lambda: handed_out(emulator) == 8, "the first run's sensor to take 8 instances")
        claimed_at = time.time()
        wait_for(lambda: len(first.calls()) == 4, "the first run's batch worker to start")
        second.open_gate(max(time.time(), claimed_at + LEASE_S + 1))  # the sensor's claims are past their lease
        wait_for(lambda: "Took " in second.output() or second.process.poll() is not None, "the second sensor")
        # the case the test is about: the second run drained past the lease while the first still worked
        assert time.time() - claimed_at > LEASE_S and completed(emulator) < 8
        code_second, out_second = second.wait()
        code_first, out_first = first.wait()
    assert code_first == 0 and "state=success" in out_first, out_first[-6000:]
    assert code_second == 0 and "state=success" in out_second, out_second[-6000:]
    assert sorted(first.calls()) == ids[:8] and sorted(second.calls()) == ids[8:]  # the new ones only
    assert "Re-offering" not in out_second and "already completed" not in out_first + out_second
    assert completions_by_instance(emulator.request_log()) == {i: 1 for i in ids}
    assert open_claims(home) == set()


def test_a_batch_worker_killed_mid_instance_gives_the_sensors_instances_back_after_the_lease(home: Home) -> None:
    with EmulatorServer() as emulator, runs() as started:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=10)]
        first, second = start_two(home, emulator, started, DAG_ID, second_RELIABILITY_SENSOR_INSTANCES="10",
                                  second_RELIABILITY_WORK_S="0")
        first.open_gate()
        wait_for(lambda: len(first.calls()) == 4, "4 instances in flight")
        time.sleep(LEASE_S / 3 + 0.5)  # at least one renewal
        first.kill()  # SIGKILL mid-instance: nothing completed
        code, _ = first.wait()
        assert code == -signal.SIGKILL and completed(emulator) == 0
        killed_at = time.time()
        second.open_gate(killed_at + LEASE_S + 0.5)  # it drains once the lease since the last renewal is over
        code, out = second.wait()
    assert code == 0 and "state=success" in out, out[-6000:]
    assert "Re-offering" in out and sorted(second.calls()) == ids  # the 8 re-offered and the 2 never handed out
    assert completions_by_instance(emulator.request_log()) == {i: 1 for i in ids}
    assert open_claims(home) == set()
