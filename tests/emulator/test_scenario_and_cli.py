"""Scenario loading/validation, the pure state machine, and the command line entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_workflowsoft.emulator import (
    DEMO_SCENARIO_PATH,
    ApiError,
    EmulatorState,
    ScenarioError,
    load_scenario,
)
from airflow_provider_workflowsoft.emulator.__main__ import main

from .conftest import KEYS, field_name

REPO_ROOT = Path(__file__).resolve().parents[2]


def _scenario(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "admin": {"login": "root", "password": "pw"},
        "api_tokens": ["t1"],
        "users": [{"Id": 1, "FullName": "A B", "Email": "a@b.c"}],
        "process_diagrams": [
            {
                "Id": 1,
                "Title": "P",
                "integration_steps": [
                    {"Id": 10, "Title": "S", "fields": [{"label": "F", "type": "String", "key": "k-1"}]}
                ],
            }
        ],
    }
    base.update(overrides)
    return base


def _field(**overrides: Any) -> dict[str, Any]:
    return _scenario(
        process_diagrams=[
            {
                "Id": 1,
                "Title": "P",
                "integration_steps": [
                    {"Id": 10, "Title": "S", "fields": [{"label": "F", "type": "String", "key": "k-1", **overrides}]}
                ],
            }
        ]
    )


# --------------------------------------------------------------------------- scenario


def test_demo_scenario_ids_and_keys() -> None:
    scenario = load_scenario()
    assert DEMO_SCENARIO_PATH.exists()
    assert (scenario.admin_login, scenario.admin_password, scenario.api_tokens) == (
        "admin@example.com",
        "admin-password",
        ("demo-token",),
    )
    assert [(u.id, u.full_name) for u in scenario.users] == [(1, "John Doe"), (2, "Jane Roe"), (3, "Ops Team")]
    assert [(d.id, [s.id for s in d.steps]) for d in scenario.diagrams] == [(1, [11]), (2, [21]), (3, []), (4, [41])]
    assert [s.reached for d in scenario.diagrams for s in d.steps] == ["at-start", "at-start", 2.0]
    found = scenario.step(11)
    assert found is not None
    assert {f.label: f.key for f in found[1].fields} == {
        k: v for k, v in KEYS.items() if k not in ("Customer", "Status")
    }


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], "expected an object"),
        (_scenario(colour="red"), "unknown key(s) 'colour'"),
        (_scenario(api_tokens="t1"), "api_tokens: expected a list"),
        (_scenario(api_tokens=[""]), "api_tokens[0]"),
        (_scenario(users=[{"Id": "1", "FullName": "x", "Email": "y"}]), "users[0].Id"),
        (_scenario(users=[{"Id": 1, "FullName": "x", "Email": "y"}] * 2), "duplicate user Id 1"),
        (_scenario(users=[{"Id": 1, "FullName": "x"}]), "missing key(s) 'Email'"),
        (_scenario(process_diagrams=[{"Id": 1, "Title": "P"}, {"Id": 1, "Title": "Q"}]), "duplicate process diagram"),
        (_scenario(process_diagrams=[{"Id": 1}]), "process_diagrams[0]: missing key(s) 'Title'"),
        (_field(type="Strng"), "unsupported type 'Strng'"),
        (_field(options="a"), "options: expected a list"),
        (_field(isReadonly="yes"), "isReadonly"),
        (_field(default=5), "process_diagrams[0].integration_steps[0] (Id 10).fields[0] ('F').default"),
        (_field(options=["a", "b"], default="c"), "allowed options"),
        (_scenario(instances=[{"integration_step_id": 99}]), "instances[0].integration_step_id: unknown"),
        (_scenario(instances=[{"integration_step_id": 10, "values": {"G": 1}}]), "has no field 'G'"),
    ],
)
def test_scenario_validation_names_the_bad_entry(data: Any, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(data)
    assert needle in str(info.value)


def test_duplicate_step_ids_across_diagrams() -> None:
    step = {"Id": 10, "Title": "S"}
    data = _scenario(
        process_diagrams=[
            {"Id": 1, "Title": "P", "integration_steps": [step]},
            {"Id": 2, "Title": "Q", "integration_steps": [step]},
        ]
    )
    with pytest.raises(ScenarioError, match=r"duplicate integration step Id 10"):
        load_scenario(data)


def test_scenario_files_json_yaml_and_errors(tmp_path: Path) -> None:
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps(_scenario()))
    assert load_scenario(json_file).api_tokens == ("t1",)
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text(
        "api_tokens: [yt]\nprocess_diagrams:\n  - Id: 4\n    Title: Y\n    integration_steps:\n"
        "      - Id: 40\n        Title: S\n        fields:\n"
        "          - {label: D, type: 'Decimal?', key: d-1, default: 2.5}\n"
    )
    scenario = load_scenario(str(yaml_file))
    found = scenario.step(40)
    assert found is not None and found[1].fields[0].default_json == "2.5"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ScenarioError, match=r"broken\.json: invalid JSON"):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_scenario(users=[{"Id": 1}])))
    with pytest.raises(ScenarioError, match=r"bad.json: users\[0\]"):
        load_scenario(bad)


def test_seeded_instances_come_back_after_reset() -> None:
    data = _scenario(instances=[{"integration_step_id": 10, "values": {"F": "seeded"}}])
    state = EmulatorState(data)
    assert state.poll(10) == {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1001}
    assert state.poll(10) is None
    state.reset()
    assert state.get_variables(5001)[0]["valueJson"] == '"seeded"'
    assert state.poll(10) is not None


# --------------------------------------------------------------------------- pure state machine


def test_token_expiry_with_an_injected_clock() -> None:
    now = [1000.0]
    state = EmulatorState(clock=lambda: now[0])
    token = state.mint_token(10)
    assert state.token_is_valid(token)
    now[0] += 10
    assert not state.token_is_valid(token)
    assert state.token_is_valid("demo-token")
    with pytest.raises(ApiError) as info:
        state.mint_token(0)
    assert info.value.status == 400


def test_state_update_and_complete_without_http() -> None:
    state = EmulatorState()
    [created] = state.create_instances(21, values={"Status": "Open"})
    iid = created["IntegrationInstanceId"]
    fields = state.update_variables(iid, {field_name("Status"): "Done"}, "robot")
    assert fields[1]["valueJson"] == '"Done"'
    state.complete(iid, {"Action": "Complete", "CustomAction": "__AUTO__"}, "robot")
    with pytest.raises(ApiError) as info:
        state.complete(iid, {"Action": "Complete", "CustomAction": "__AUTO__"}, "robot")
    assert info.value.status == 409
    snapshot = state.snapshot()
    assert snapshot["instances"][0]["completed_by"] == "robot"
    assert snapshot["instances"][0]["fields"] == {"Customer": "ACME Corp", "Status": "Done"}


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="poll_semantics"):
        EmulatorState(poll_semantics="twice")


# --------------------------------------------------------------------------- CLI


def test_cli_rejects_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["--scenario", str(bad), "--port", "0"]) == 2
    assert "expected an object" in capsys.readouterr().err


def test_cli_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_workflowsoft.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--empty-poll",
            "null-id",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.05)
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": "Bearer demo-token"}
        poll = requests.get(
            f"{base}/api/v2/workflows/instances/new-integrations", params={"id": 11}, headers=headers, timeout=5
        )
        assert poll.json() == {"IntegrationInstanceId": None, "ProcessInstanceId": None}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert base in out
    assert "demo-token" in out and "admin@example.com" in out


def test_the_readmes_example_scenario_loads_and_serves_its_tenant() -> None:
    """docs/examples/my_scenario.json, which the README starts the emulator with, is a valid scenario that
    serves what the README's first DAG uses: its diagrams and step, the fields it reads and writes, its users,
    and instances waiting at start."""
    from airflow_provider_workflowsoft.emulator import EmulatorServer

    path = REPO_ROOT / "docs" / "examples" / "my_scenario.json"
    assert "--scenario docs/examples/my_scenario.json" in (REPO_ROOT / "README.md").read_text()
    with EmulatorServer(scenario=path) as emu:
        auth = {"Authorization": "Bearer demo-token"}
        diagrams = requests.get(f"{emu.base_url}/api/v2/workflows", headers=auth, timeout=5).json()
        assert {d["Title"] for d in diagrams} == {"Event registration", "Customer follow-up"}
        steps = requests.get(f"{emu.base_url}/api/v2/workflows/1/tasks", params={"integration": "true"},
                             headers=auth, timeout=5).json()
        assert [(s["Id"], s["Title"]) for s in steps] == [(11, "Enrich event")]
        users = requests.get(f"{emu.base_url}/api/users/search", params={"Query": "example.com"}, headers=auth,
                             timeout=5).json()
        assert {"john.doe@example.com", "jane.roe@example.com"} <= {u["Email"] for u in users}
        waiting = [i for i in emu.snapshot()["instances"] if i["status"] == "new"]
        assert [i["fields"]["Event name"] for i in waiting] == ["Data Summit", "Workshop day"]
        assert {"Event name", "Venue code", "Event exists"} <= set(waiting[0]["fields"])
        assert all(i["integration_step_id"] == 11 for i in waiting)
