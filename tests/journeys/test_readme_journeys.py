"""A newcomer's journeys, copied from README.md: the connection added with ``airflow connections add`` (stored
in Airflow's database), the README's code saved as a DAG file, ``airflow dags test``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from tests.dag_runs.conftest import (
    DAGS_TEST_PASSES_EXCEPTION,
    assert_dag_failed,
    needs_airflow_3_readme,
    readme_python_block,
)
from tests.journeys.conftest import Journey

pytestmark = [pytest.mark.airflow, needs_airflow_3_readme]

#: The connection extra the README's ``airflow connections add`` line passes.
README_EXTRA = {"on_behalf_of": "system"}


def _claims_variables(journey: Journey, tmp_path: Any) -> dict[str, Any]:
    """Every ``workflowsoft.claims.*`` Variable left in the journey's Airflow home, by key (one CLI call)."""
    path = tmp_path / "variables.json"
    result = journey.airflow("variables", "export", str(path))
    assert result.returncode == 0, result.stdout[-3000:]
    exported = json.loads(path.read_text())
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in exported.items()
            if k.startswith("workflowsoft.claims.")}


def test_first_dag_with_one_failing_instance_completes_the_five_others(journey: Journey, tmp_path: Any) -> None:
    """The README's first DAG, six instances, one whose *Event name* is empty (the README's ``compute`` raises
    for it): the five others are completed with the README's values, the failing one is not and stays
    claimed (to be offered again after ``reclaim_after``), the follow-ups do not run and the run is failed,
    as the README says."""
    journey.write_dag("enrich_events", readme_python_block("## A first DAG"))
    with EmulatorServer() as emulator:
        journey.add_connection(emulator, extra=README_EXTRA)
        names: list[str | None] = ["Data Summit", "Data Summit", "Data Summit", None, "Data Summit", "Data Summit"]
        # Created before the run: the deferrable sensor finds them in its first check and returns without
        # deferring. (A deferred trigger reading a connection stored in the database fails in `airflow dags
        # test` today, issue 17 finding 1, fixed separately; this journey is about the failing instance.)
        created = [emulator.create_instances(11, values={"Event name": name})[0]["IntegrationInstanceId"]
                   for name in names]
        result = journey.dags_test("enrich_events")
        state = emulator.snapshot()
    assert_dag_failed(result)
    assert "Took 6 integration instance(s) of step 11" in result.stdout, result.stdout[-6000:]
    by_id = {i["IntegrationInstanceId"]: i for i in state["instances"]}
    failing = created.pop(3)
    for iid in created:
        assert by_id[iid]["status"] == "completed", by_id[iid]
        assert (by_id[iid]["fields"]["Venue code"], by_id[iid]["fields"]["Event exists"]) == ("HALL-DAT", True)
    assert by_id[failing]["status"] != "completed" and by_id[failing]["fields"]["Venue code"] is None
    assert [p for p in state["processes"] if p["source"] == "api"] == [] and state["tasks"] == []
    open_claims = {int(iid) for record in _claims_variables(journey, tmp_path).values()
                   for iid in (record.get("claims") or {})}
    assert failing in open_claims, open_claims


def test_failure_notifier_creates_the_task_for_the_person(journey: Journey) -> None:
    """The README's notifier block: its task fails, and a Workflowsoft task is created for ``ops@example.com``
    by ``john.doe@example.com``, titled and described as the README says."""
    journey.write_dag("nightly_load", readme_python_block("## A task for a person when a task fails"))
    with EmulatorServer() as emulator:
        journey.add_connection(emulator, extra=README_EXTRA)
        result = journey.dags_test("nightly_load")
        state = emulator.snapshot()
    assert_dag_failed(result)
    assert len(state["tasks"]) == 1, result.stdout[-6000:]
    task = state["tasks"][0]
    assert task["title"] == "Airflow task failed: nightly_load.load"
    assert (task["assigned_user_id"], task["created_by"]) == (3, 1)  # the demo scenario's Ops Team, John Doe
    for shown in ("Task load of DAG nightly_load failed", "Run: manual__", "Try: 1", "Log: "):
        assert shown in task["description"], task["description"]
    # The error line, where Airflow gives the callback the exception (not under 3.0/3.1's dags test).
    assert ("Error: the warehouse is down" in task["description"]) is DAGS_TEST_PASSES_EXCEPTION, task
