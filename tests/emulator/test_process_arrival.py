"""A started process reaches an integration step later: after the scenario's delay or on an admin call
(``reached`` of a step, ``POST /_emulator/processes/<id>/reach``); steps without ``reached`` keep being
created with the process."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.emulator.scenario import DEMO_SCENARIO_PATH, ScenarioError, load_scenario
from airflow_provider_workflowsoft.emulator.state import EmulatorState

from .conftest import Api

APPROVAL = 4
DECISION_STEP = 41
START = "/api/v2/workflows/start"


def scenario(reached: Any) -> dict[str, Any]:
    data = json.loads(Path(DEMO_SCENARIO_PATH).read_text())
    data = copy.deepcopy(data)
    data["process_diagrams"][3]["integration_steps"][0]["reached"] = reached
    return data


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_demo_approval_step_is_reached_two_seconds_after_the_start() -> None:
    clock = Clock()
    state = EmulatorState(clock=clock)
    started = state.start_process({"TemplateId": APPROVAL, "Fields": {"Request": "Laptops", "Amount": "2400.50",
                                                                      "Not a field": 1}}, "1")
    assert state.poll(DECISION_STEP) is None
    (process,) = state.snapshot()["processes"]
    assert process["pending_steps"] == {"41": "1970-01-01T00:16:42.000Z"} and process["integration_instance_ids"] == []
    clock.now += 1.9
    assert state.poll(DECISION_STEP) is None
    clock.now += 0.1
    instance = state.poll(DECISION_STEP)
    assert instance == {"IntegrationInstanceId": 5001, "ProcessInstanceId": started["Id"]}
    fields = {f["label"]: json.loads(f["valueJson"]) for f in state.get_variables(5001)}
    # the process's fields that the step has are carried to it; the person's decision is the step's default
    assert fields["Request"] == "Laptops" and fields["Amount"] == 2400.5 and fields["Decision"] == "Approved"
    assert "pending_steps" not in state.snapshot()["processes"][0]


def test_steps_without_reached_are_created_with_the_process() -> None:
    state = EmulatorState()
    started = state.start_process({"TemplateId": 1}, "1")
    assert state.poll(11) == {"IntegrationInstanceId": 5001, "ProcessInstanceId": started["Id"]}


def test_an_admin_call_makes_a_process_reach_its_step(emulator: EmulatorServer, api: Api) -> None:
    emulator.state.scenario = load_scenario(scenario("admin-call"))
    started = api.post(START, json={"TemplateId": APPROVAL, "Fields": {"Request": "Chairs"}},
                       headers={"X-OnBehalfOf-Id": "1"}).json()
    assert api.poll(DECISION_STEP).status_code == 204
    assert emulator.snapshot()["processes"][0]["pending_steps"] == {"41": None}  # never on its own
    reached = api.admin("POST", f"processes/{started['Id']}/reach",
                        json={"integration_step_id": DECISION_STEP, "values": {"Decision": "Rejected"}})
    assert reached.status_code == 201
    assert reached.json() == [{"IntegrationInstanceId": 5001, "ProcessInstanceId": started["Id"]}]
    assert api.poll(DECISION_STEP).json() == reached.json()[0]
    fields = {f["label"]: json.loads(f["valueJson"]) for f in api.get(
        "/api/v2/workflows/instances/tasks/5001/variables").json()}
    assert fields["Decision"] == "Rejected" and fields["Request"] == "Chairs"
    again = api.admin("POST", f"processes/{started['Id']}/reach", json={})
    assert again.status_code == 409 and "no pending integration step" in again.text


def test_reach_refuses_what_it_cannot_do(emulator: EmulatorServer, api: Api) -> None:
    emulator.state.scenario = load_scenario(scenario("admin-call"))
    started = emulator.state.start_process({"TemplateId": APPROVAL}, "1")
    assert api.admin("POST", "processes/999/reach", json={}).status_code == 404
    assert api.admin("POST", f"processes/{started['Id']}/reach", json={"integration_step_id": 11}).status_code == 409
    assert api.admin("POST", f"processes/{started['Id']}/reach", json={"step": 41}).status_code == 400
    bad = api.admin("POST", f"processes/{started['Id']}/reach", json={"values": {"Decision": "Maybe"}})
    assert bad.status_code == 400 and "Maybe" in bad.text
    assert emulator.reach(started["Id"]) == [{"IntegrationInstanceId": 5001, "ProcessInstanceId": started["Id"]}]


def test_a_start_whose_fields_do_not_fit_a_later_step_is_refused(api: Api) -> None:
    answer = api.post(START, json={"TemplateId": APPROVAL, "Fields": {"Amount": "a lot"}},
                      headers={"X-OnBehalfOf-Id": "1"})
    assert answer.status_code == 400 and "Amount" in answer.text


@pytest.mark.parametrize("reached", [-1, True, "later", [2]])
def test_reached_must_be_a_choice_or_seconds(reached: Any) -> None:
    with pytest.raises(ScenarioError, match=r"integration_steps\[0\] \(Id 41\)\.reached"):
        load_scenario(scenario(reached))


def test_pending_steps_survive_a_restart_with_a_state_file(tmp_path: Path) -> None:
    clock = Clock()
    state_file = tmp_path / "state.json"
    started = EmulatorState(state_file=state_file, clock=clock).start_process({"TemplateId": APPROVAL}, "1")
    clock.now += 5
    again = EmulatorState(state_file=state_file, clock=clock)
    assert again.poll(DECISION_STEP) == {"IntegrationInstanceId": 5001, "ProcessInstanceId": started["Id"]}
    assert load_scenario(scenario(2.5)).to_dict()["process_diagrams"][3]["integration_steps"][0]["reached"] == 2.5
