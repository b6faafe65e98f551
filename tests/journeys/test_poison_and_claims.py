"""Journeys: a burst with one poison instance re-run until it is parked, the on-call command line releasing it,
and the claims Variables that remain after a few runs of the README's first DAG (the connection added with
``airflow connections add``, each run an ``airflow dags test``)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS
from tests.dag_runs.conftest import needs_airflow_3_readme
from tests.journeys.conftest import Journey

pytestmark = [pytest.mark.airflow, needs_airflow_3_readme]

CLAIMS_CLI = str(Path(sys.executable).with_name("workflowsoft-claims"))
POISON = 5003

BURST_DAG = f'''
import datetime as dt

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def burst():
    @task.workflowsoft_worker(integration_step_id=11, max_instances=100, max_workers=4,
                              reclaim_after=dt.timedelta(0),  # re-runs offer a failed instance again at once
                              max_offers=2)
    def enrich(fields: dict, instance: dict) -> dict:
        if instance["IntegrationInstanceId"] == {POISON}:
            raise ValueError("this instance's data is refused every time")
        return {{"Venue code": "HALL-" + fields["Event name"][:3].upper(), "Event exists": True}}

    enrich()


burst()
'''

FIRST_DAG = '''
import pendulum
from airflow.sdk import dag, task

from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def enrich_events():
    new_events = WorkflowsoftIntegrationSensor(
        task_id="wait_for_events", integration_step_id=11, fetch_fields=True, max_instances=10, mode="poke",
        poke_interval=1, timeout=60,
    )

    @task
    def compute(instance: dict) -> dict:
        fields = instance["fields"]
        return {
            "integration_instance_id": instance["IntegrationInstanceId"],
            "fields": {"Venue code": "HALL-" + fields["Event name"][:3].upper(), "Event exists": True},
        }

    WorkflowsoftCompleteStepOperator.partial(task_id="complete").expand_kwargs(compute.expand(instance=new_events.output))


enrich_events()
'''


def claims_cli(journey: Journey, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLAIMS_CLI, *args], env=journey.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)


def claims_variables(journey: Journey) -> list[str]:
    """The ``workflowsoft.claims.*`` Variables (what ``airflow variables list`` shows, read from the database)."""
    with sqlite3.connect(journey.home / "airflow.db") as db:
        rows = db.execute("SELECT key FROM variable WHERE key LIKE 'workflowsoft.claims.%'").fetchall()
    return sorted(row[0] for row in rows)


def last_report(journey: Journey, task_id: str) -> dict[str, Any]:
    with sqlite3.connect(journey.home / "airflow.db") as db:
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE task_id = ? AND key = 'return_value' ORDER BY timestamp DESC LIMIT 1",
            (task_id,)).fetchone()
    report = json.loads(value)
    return json.loads(report) if isinstance(report, str) else report


def statuses(emulator: EmulatorServer) -> dict[int, str]:
    return {i["IntegrationInstanceId"]: i["status"] for i in emulator.snapshot()["instances"]}


def test_a_burst_with_a_poison_instance_is_parked_then_released_from_the_command_line(
        journey: Journey, emulator: EmulatorServer) -> None:
    journey.add_connection(emulator)
    journey.write_dag("burst", BURST_DAG)
    emulator.create_instances(11, count=6)  # handed out once each: a lost claim would be a lost instance

    first = journey.dags_test("burst")
    assert first.returncode != 0 or "state=failed" in first.stdout  # the poison instance fails the task...
    done = statuses(emulator)
    assert [i for i, s in done.items() if s == "completed"] == [5001, 5002, 5004, 5005, 5006]  # ...not the others
    second = journey.dags_test("burst")  # offered again at once (lease 0): its second failure
    assert "state=failed" in second.stdout and "reclaimed" in second.stdout
    third = journey.dags_test("burst")  # handed out max_offers=2 times: parked, not offered
    assert third.returncode == 0 and "state=success" in third.stdout, third.stdout[-4000:]
    assert f"Parked 1 integration instance(s), handed out 2 times without being completed: [{POISON}]" in third.stdout
    report = last_report(journey, "enrich")
    assert report["parked"] == [POISON] and report["processed"] == 0 and report["failed"] == []
    assert {"processed", "received", "succeeded", "failed", "results", "skipped"} <= set(report)

    listed = claims_cli(journey, "list", "--json")
    assert listed.returncode == 0, listed.stdout
    (entry,) = json.loads(next(line for line in listed.stdout.splitlines() if line.startswith("[")))
    assert entry["integration_instance_id"] == POISON and entry["state"] == "parked" and entry["offers"] == 2
    assert len(claims_variables(journey)) == 1  # the one record that keeps it parked (later runs: unit tests)

    released = claims_cli(journey, "release", str(POISON))
    assert released.returncode == 0 and f"release: {POISON}" in released.stdout, released.stdout
    fourth = journey.dags_test("burst")  # put back: offered at once, and it fails once more
    assert "state=failed" in fourth.stdout and last_report(journey, "enrich")["processed"] == 1
    assert statuses(emulator)[POISON] == "handed_out"
    unknown = claims_cli(journey, "park", "999999")
    assert unknown.returncode == 1 and "not claimed anywhere" in unknown.stdout


def test_runs_of_the_first_dag_leave_a_bounded_number_of_claims_variables(journey: Journey,
                                                                          emulator: EmulatorServer) -> None:
    """Reported: 24 workflowsoft.claims.* Variables after a few runs (each mapped completion's record was kept
    for a lease). Now: after every run, the last run's completion records and at most one carrier remain."""
    journey.add_connection(emulator)
    journey.write_dag("enrich_events", FIRST_DAG)
    per_run = 2
    counts = []
    for _ in range(2):
        emulator.create_instances(11, count=per_run)
        result = journey.dags_test("enrich_events")
        assert result.returncode == 0 and "state=success" in result.stdout, result.stdout[-4000:]
        counts.append(len(claims_variables(journey)))
    assert all(status == "completed" for status in statuses(emulator).values())
    # one record per completion of the last run (its done mark) and the sensor's record, which carries the done
    # marks of the lease that the next sensor check resolves (0.3 kept every completion's record: 3, 5, 7, ...)
    assert counts == [per_run + 1] * 2, counts


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the Asset state store is Airflow 3.3's; before it, a watcher's "
                    "record is a Variable as a task's is, which the other tests of this module list and release")
def test_the_command_line_reaches_a_watchers_record_in_the_asset_state_store(journey: Journey) -> None:
    """The watcher's record lives in its Asset's state store (metadata database): the command line lists it, and
    leaves a release for the watcher to apply (the running watcher would overwrite a direct edit)."""
    from airflow_provider_workflowsoft.records import naming

    uri = "workflowsoft://workflowsoft_default/integration-steps/11"
    key = naming.claims_key("workflowsoft_default", naming.watcher_owner(uri))
    record = {"owner": naming.watcher_owner(uri), "updated_at": "2026-12-01T10:00:00+00:00", "closed": False,
              "claims": {"5001": {"step": 11, "claimed_at": "2026-12-01T10:00:00+00:00", "offers": 1}},
              "done": {}, "parked": {"5002": {"step": 11, "offers": 5, "parked_at": "2026-12-01T10:00:00+00:00",
                                              "reason": "offered 5 times without being completed (max_offers=5)"}}}
    with sqlite3.connect(journey.home / "airflow.db") as db:  # what the watcher wrote, as Airflow stores it
        db.execute("INSERT INTO asset (name, uri, \"group\", extra, created_at, updated_at) VALUES "
                   "(?, ?, 'asset', '{}', '2026-12-01 10:00:00', '2026-12-01 10:00:00')", (uri, uri))
        (asset_id,) = db.execute("SELECT id FROM asset WHERE uri = ?", (uri,)).fetchone()
        db.execute("INSERT INTO asset_state_store (asset_id, key, value, updated_at) VALUES "
                   "(?, ?, ?, '2026-12-01 10:00:00')", (asset_id, key, json.dumps(record)))
    listed = claims_cli(journey, "list")
    assert listed.returncode == 0, listed.stdout
    assert f"5001\tclaimed\tstep 11\toffers 1\tasset watcher of {uri}" in listed.stdout
    assert f"5002\tparked\tstep 11\toffers 5\tasset watcher of {uri}" in listed.stdout
    released = claims_cli(journey, "release", "5002")
    assert released.returncode == 0 and f"asked of the asset watcher of {uri}" in released.stdout, released.stdout
    (command_key,) = claims_variables(journey)
    got = journey.airflow("variables", "get", command_key)  # values are encrypted in the database
    command = json.loads(got.stdout[got.stdout.index("{"):])
    assert command["target"] == key and command["action"] == "release" and command["ids"] == ["5002"]
