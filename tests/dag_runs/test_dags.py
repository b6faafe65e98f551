"""Real Airflow (``airflow dags test``) against the emulator over loopback."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.dag_runs.conftest import (
    DAGS_TEST_PASSES_EXCEPTION,
    TEST_DAGS_FOLDER,
    assert_dag_failed,
    assert_dag_succeeded,
    needs_airflow_3_examples,
)

pytestmark = pytest.mark.airflow

FAST = {"WORKFLOWSOFT_POKE_INTERVAL": "1"}

EXPECTED = {  # from dags/data/venues.csv
    "PyCon Berlin": {"Venue code": "BER-HALL-A", "Event duration": Decimal("16.5"), "Attendees": 1200,
                     "Event exists": True},
    "Mystery meetup": {"Venue code": "ONLINE", "Event duration": Decimal("1.5"), "Attendees": 1000,
                       "Event exists": False},
}


def _create_after_first_poll(emulator, delay: float = 1.5, step: int = 11) -> threading.Thread:
    """Create the instances once the sensor's first check found nothing (so it deferred and the trigger
    is what finds them)."""

    def polls() -> int:
        return sum(1 for r in emulator.request_log() if "new-integrations" in str(r.get("path", "")))

    def create() -> None:
        deadline = time.monotonic() + 120
        while polls() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(delay)
        if step != 11:
            emulator.create_instances(step, count=3)
            return
        emulator.create_instances(11, values={"Event name": "PyCon Berlin"})
        emulator.create_instances(11, values={"Event name": "Mystery meetup", "Category": "Webinar"})

    thread = threading.Thread(target=create, daemon=True)
    thread.start()
    return thread


def _trigger_polls(emulator) -> int:
    return sum(1 for r in emulator.request_log() if "new-integrations" in str(r.get("path", "")))


def _check_enriched(emulator) -> None:
    instances = list(emulator.state.instances_for(11))
    assert len(instances) == 2
    for instance in instances:
        assert instance["status"] == "completed", instance
        fields = instance["fields"]
        for label, value in EXPECTED[fields["Event name"]].items():
            assert fields[label] == value, (label, fields)


@needs_airflow_3_examples
def test_enrich_events_deferrable_poll_once(run_dag, emulator):
    emulator.update_settings(poll_semantics="once")
    thread = _create_after_first_poll(emulator)
    result = run_dag("workflowsoft_enrich_events", emulator=emulator, extra_env=FAST)
    thread.join()
    assert_dag_succeeded(result)
    assert _trigger_polls(emulator) >= 3  # one check in execute, empty polls by the trigger, then the drain
    assert "Received 2 integration instance(s) of step 11" in result.stdout
    _check_enriched(emulator)


@needs_airflow_3_examples
def test_enrich_events_deferrable_until_completed(run_dag, emulator):
    """A server that hands out the oldest open instance until it is completed: each drain stops at the
    repeat, so the DAG runs until every instance is done (one per run), never looping."""
    emulator.update_settings(poll_semantics="until-completed")
    thread = _create_after_first_poll(emulator)
    for _ in range(3):
        result = run_dag("workflowsoft_enrich_events", emulator=emulator, extra_env=FAST)
        thread.join()
        assert_dag_succeeded(result)
        if all(i["status"] == "completed" for i in emulator.state.instances_for(11)):
            break
    _check_enriched(emulator)


@needs_airflow_3_examples
def test_enrich_events_one_failing_instance_does_not_block_the_others(run_dag, emulator):
    """An instance without an event name fails its own ``compute``; the instances before and after it are
    completed with their values, it is not (it stays claimed, to be offered again), and the run is failed."""
    emulator.create_instances(11, values={"Event name": "PyCon Berlin"})
    (bad,) = emulator.create_instances(11, values={"Event name": None})
    emulator.create_instances(11, values={"Event name": "Mystery meetup", "Category": "Webinar"})
    result = run_dag("workflowsoft_enrich_events", emulator=emulator, extra_env=FAST)
    assert_dag_failed(result)
    assert f"Integration instance {bad['IntegrationInstanceId']} has no 'Event name'" in result.stdout
    instances = {i["IntegrationInstanceId"]: i for i in emulator.state.instances_for(11)}
    failing = instances.pop(bad["IntegrationInstanceId"])
    assert failing["status"] != "completed" and failing["fields"]["Venue code"] is None, failing
    assert len(instances) == 2
    for instance in instances.values():
        assert instance["status"] == "completed", instance
        for label, value in EXPECTED[instance["fields"]["Event name"]].items():
            assert instance["fields"][label] == value, (label, instance["fields"])


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_sensor_modes_with_mapping(run_dag, emulator, mode):
    thread = _create_after_first_poll(emulator, step=21)  # the first poke finds nothing: the sensor waits
    result = run_dag(f"workflowsoft_sensor_{mode}", emulator=emulator, dags_folder=TEST_DAGS_FOLDER)
    thread.join()
    assert_dag_succeeded(result)
    assert _trigger_polls(emulator) >= 2
    instances = list(emulator.state.instances_for(21))
    assert [i["status"] for i in instances] == ["completed"] * 3
    assert all(i["fields"]["Status"] == "Done" for i in instances)


@needs_airflow_3_examples
def test_start_processes_one_per_row_and_one_task(run_dag, emulator):
    rows = (Path(__file__).resolve().parents[2] / "dags" / "data" / "new_customers.csv").read_text().splitlines()
    result = run_dag("workflowsoft_start_processes", emulator=emulator)
    assert_dag_succeeded(result)
    snapshot = emulator.snapshot()
    processes = snapshot["processes"]
    assert len(processes) == len(rows) - 1
    assert {p["process_diagram_id"] for p in processes} == {2}
    assert len(snapshot["tasks"]) == 1
    task = snapshot["tasks"][0]
    assert task["assigned_user_id"] == 3 and task["created_by"] == 1
    assert f"{len(rows) - 1} new customers" in task["title"]


@needs_airflow_3_examples
def test_failure_notifier_creates_a_task(run_dag, emulator):
    result = run_dag("workflowsoft_failure_notifier", emulator=emulator, conf={"fail": True})
    assert result.returncode != 0 or "state=failed" in result.stdout
    tasks = emulator.snapshot()["tasks"]
    assert len(tasks) == 1, result.stdout[-4000:]
    assert tasks[0]["title"] == "Airflow task failed: workflowsoft_failure_notifier.load"
    assert "Task load of DAG workflowsoft_failure_notifier failed" in tasks[0]["description"]
    # The error line, where Airflow gives the callback the exception (not under 3.0/3.1's dags test).
    assert ("Error: Failing on purpose" in tasks[0]["description"]) is DAGS_TEST_PASSES_EXCEPTION, tasks[0]
    assert tasks[0]["assigned_user_id"] == 3


@needs_airflow_3_examples
def test_failure_notifier_quiet_on_success(run_dag, emulator):
    result = run_dag("workflowsoft_failure_notifier", emulator=emulator, conf={"fail": False})
    assert_dag_succeeded(result)
    assert emulator.snapshot()["tasks"] == []


@needs_airflow_3_examples
def test_approval_round_trip_waits_for_its_own_process_and_branches_on_the_decision(run_dag, emulator):
    """The example DAG under ``airflow dags test``: its process reaches the decision step only on an admin call
    (a person deciding), after the sensor deferred; an instance of another process waiting at the same step is
    passed on, not completed and not held."""
    from airflow_provider_workflowsoft.emulator.scenario import load_scenario

    data = load_scenario(None).to_dict()
    data["process_diagrams"][3]["integration_steps"][0]["reached"] = "admin-call"
    emulator.state.scenario = load_scenario(data)
    other = emulator.state.start_process({"TemplateId": 4, "Fields": {"Request": "someone else's"}}, "1")
    (foreign,) = emulator.reach(other["Id"])

    def decide() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            mine = [p for p in emulator.snapshot()["processes"] if p["id"] != other["Id"] and p.get("pending_steps")]
            if mine and _trigger_polls(emulator) >= 2:  # the sensor checked, deferred, and its trigger polls
                emulator.reach(mine[0]["id"], 41, {"Decision": "Rejected"})
                return
            time.sleep(0.2)

    thread = threading.Thread(target=decide, daemon=True)
    thread.start()
    result = run_dag("workflowsoft_approval_round_trip", emulator=emulator,
                     extra_env={"WORKFLOWSOFT_POLL_INTERVAL": "0.5"})
    thread.join()
    assert_dag_succeeded(result)
    instances = {i["ProcessInstanceId"]: i for i in emulator.state.instances_for(41)}
    (mine,) = [i for pid, i in instances.items() if pid != other["Id"]]
    assert mine["status"] == "completed" and mine["fields"]["Reply"] == "Rejected: nothing ordered"
    assert mine["fields"]["Order number"] is None  # the other branch was skipped
    assert mine["fields"]["Request"] == "Two laptops for the new hires"  # the start's fields reached the step
    assert instances[other["Id"]]["status"] == "handed_out"  # passed on: left for its own waiter or a worker
    assert f"Passed integration instance {foreign['IntegrationInstanceId']}" in result.stdout
