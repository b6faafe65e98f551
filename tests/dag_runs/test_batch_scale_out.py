"""Scale-out under real Airflow: mapped batch workers on one step (``airflow dags test reliability_scale_out``).

The README's pattern (the operator mapped over ``max_instances``, the decorator over a keyword of its function), each
map index with its own claims record, against the emulator in both server readings: every instance completed once
with its values, nothing lost, no claim or record left. Against a server that hands an instance out until it is
completed a drain takes one instance (the oldest open one, which every poll returns), so that reading runs the DAG
until everything is completed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS
from tests.dag_runs.prefork import run_airflow
from tests.dag_runs.test_reliability import Home, check_instances, token_conn

pytestmark = pytest.mark.airflow

STEP = 11
WORKERS = 3  # per mapped task: two mapped tasks, six map indices
PROCESSED = re.compile(r"Processed (\d+) integration instance\(s\)")
# Airflow 2.11's `airflow dags test` prints each task log line twice (the task's log and the console).
COPIES = 1 if AIRFLOW_V_3_0_PLUS else 2


@pytest.fixture
def home(airflow_home: Path) -> Home:
    return Home(airflow_home)


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_mapped_batch_workers_complete_every_instance_once(home: Home, semantics: str) -> None:
    once = semantics == "once"
    count = 50 if once else 8
    with EmulatorServer(poll_semantics=semantics) as emulator:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=count)]
        emulator.set_faults(latency_ms=20)
        env = home.env(token_conn(emulator), {"RELIABILITY_SCALE_OUT_WORKERS": str(WORKERS),
                                              "RELIABILITY_SCALE_OUT_SHARE": "10"})
        processed, runs = 0, 0
        for attempt in range(1, 6):
            runs = attempt
            result = run_airflow(["dags", "test", "reliability_scale_out"], env, timeout=600)
            assert result.returncode == 0 and "state=success" in result.stdout, result.stdout[-6000:]
            lines = PROCESSED.findall(result.stdout)
            assert len(lines) == 2 * WORKERS * COPIES, lines  # one report per map index
            processed += sum(int(n) for n in lines) // COPIES
            if sum(1 for i in emulator.snapshot()["instances"] if i["status"] == "completed") == count:
                break
        checked = check_instances(emulator, ids, home)
    assert checked["duplicated"] == [] and checked["wrong_values"] == {}, checked
    assert checked["lost"] == [], checked
    assert checked["open_claims"] == {} and checked["claim_records_left"] == 0, checked
    assert processed == count, (processed, count)  # no callable ran twice
    if once:
        assert runs == 1
