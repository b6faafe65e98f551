"""Fault injection, admin endpoints, request log and state-file persistence of the emulator."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_workflowsoft.emulator import EmulatorServer

from .conftest import CRM_STEP, EVENT_STEP, Api, field_name

# --------------------------------------------------------------------------- faults


def _statuses(api: Api, n: int) -> list[int]:
    return [api.get("/api/v2/workflows").status_code for _ in range(n)]


def test_error_rate_is_repeatable_with_a_seed(api: Api) -> None:
    faults = {"error_rate": 0.5, "error_statuses": [500, 503], "seed": 7}
    assert api.admin("POST", "faults", json=faults).status_code == 200
    first = _statuses(api, 30)
    assert api.admin("POST", "faults", json=faults).status_code == 200
    second = _statuses(api, 30)
    assert first == second
    assert {500, 503, 200} <= set(first)
    log = api.admin("GET", "requests").json()
    assert {e["fault"] for e in log if e["status"] != 200} <= {"error:500", "error:503"}
    assert all(e["fault"] is None for e in log if e["status"] == 200)


def test_429_fault_carries_retry_after(api: Api) -> None:
    api.admin("POST", "faults", json={"error_rate": 1.0, "error_statuses": [429], "retry_after": 2})
    resp = api.get("/api/v2/workflows")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "2"
    assert "Injected fault" in resp.json()["Message"]
    # Admin endpoints are never faulted.
    assert api.admin("GET", "state").status_code == 200
    assert api.admin("DELETE", "faults").status_code == 200
    assert api.get("/api/v2/workflows").status_code == 200


def test_max_faults_and_method_filter(api: Api, emulator: EmulatorServer) -> None:
    emulator.set_faults(error_rate=1.0, error_statuses=[503], max_faults=2, methods=["GET"])
    assert _statuses(api, 4) == [503, 503, 200, 200]
    emulator.set_faults(error_rate=1.0, error_statuses=[502], methods=["POST"])
    assert api.get("/api/v2/workflows").status_code == 200
    resp = api.post("/api/v2/tasks", json={"Title": "t"}, headers={"X-OnBehalfOf-Id": "1"})
    assert resp.status_code == 502
    assert emulator.state.snapshot()["tasks"] == []  # an injected error never acts


def test_latency(api: Api, emulator: EmulatorServer) -> None:
    emulator.set_faults(latency_ms=150)
    started = time.monotonic()
    assert api.get("/api/v2/workflows").status_code == 200
    assert time.monotonic() - started >= 0.15
    emulator.clear_faults()
    emulator.update_settings(latency_ms=100)
    started = time.monotonic()
    assert api.get("/api/v2/workflows").status_code == 200
    assert time.monotonic() - started >= 0.1


def test_drop_closes_the_connection_before_acting(api: Api, emulator: EmulatorServer) -> None:
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        api.post("/api/v2/tasks", json={"Title": "t"}, headers={"X-OnBehalfOf-Id": "1"})
    emulator.clear_faults()
    assert emulator.state.snapshot()["tasks"] == []
    [entry] = emulator.request_log()
    assert entry["fault"] == "drop" and entry["status"] is None
    # The client recovers on a fresh connection.
    assert api.get("/api/v2/workflows").status_code == 200


def test_commit_then_drop_applies_the_change(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(CRM_STEP, values={"Status": "Done"})
    iid = created["IntegrationInstanceId"]
    emulator.set_faults(commit_then_drop_rate=1.0)
    assert api.get("/api/v2/workflows").status_code == 200  # GETs are never commit-then-dropped
    with pytest.raises(requests.ConnectionError):
        api.complete(iid)
    emulator.clear_faults()
    [instance] = emulator.state.snapshot()["instances"]
    assert instance["status"] == "completed"
    assert api.complete(iid).status_code == 409
    assert [e["fault"] for e in emulator.request_log()] == [None, "commit_then_drop", None]


@pytest.mark.parametrize(
    "body",
    [{"error_rate": 2}, {"error_statuses": [200]}, {"bogus": 1}, {"methods": "GET"}, {"latency_ms": -1}],
)
def test_bad_fault_config_is_rejected(api: Api, body: dict[str, object]) -> None:
    assert api.admin("POST", "faults", json=body).status_code == 400


# --------------------------------------------------------------------------- admin endpoints


def test_admin_create_instances_by_step_and_by_diagram(api: Api) -> None:
    resp = api.admin(
        "POST", "instances", json={"integration_step_id": EVENT_STEP, "count": 2, "values": {"Venue code": "X1"}}
    )
    assert resp.status_code == 201
    created = resp.json()
    assert created == [
        {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1001},
        {"IntegrationInstanceId": 5002, "ProcessInstanceId": 1002},
    ]
    assert api.variables(5001)["Venue code"]["valueJson"] == '"X1"'
    by_diagram = api.admin("POST", "instances", json={"process_diagram_id": 2, "values": {"Customer": "Globex"}})
    assert by_diagram.json() == [{"IntegrationInstanceId": 5003, "ProcessInstanceId": 1003}]
    assert api.variables(5003)["Customer"]["valueJson"] == '"Globex"'  # read-only fields can be seeded


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"integration_step_id": 999}, 404),
        ({"process_diagram_id": 999}, 404),
        ({}, 400),
        ({"integration_step_id": 11, "process_diagram_id": 1}, 400),
        ({"integration_step_id": 11, "values": {"Nope": 1}}, 400),
        ({"integration_step_id": 11, "values": {"Event exists": "maybe"}}, 400),
        ({"integration_step_id": 11, "count": 0}, 400),
        ({"integration_step_id": 11, "colour": "red"}, 400),
    ],
)
def test_admin_create_instances_errors(api: Api, body: dict[str, object], status: int) -> None:
    resp = api.admin("POST", "instances", json=body)
    assert resp.status_code == status, resp.text
    assert api.admin("GET", "state").json()["instances"] == []


def test_state_never_exposes_token_values(api: Api, emulator: EmulatorServer) -> None:
    minted = emulator.mint_token()
    text = api.admin("GET", "state").text
    assert "demo-token" not in text and minted not in text
    tokens = api.admin("GET", "state").json()["tokens"]
    assert tokens == {"static_count": 1, "static_valid": True, "minted_active": 1, "minted_expired": 0}


def test_settings_endpoint(api: Api) -> None:
    assert api.admin("GET", "settings").json()["empty_poll"] == "204"
    resp = api.admin("PATCH", "settings", json={"empty_poll": "null-id", "poll_semantics": "until-completed"})
    assert resp.status_code == 200
    assert resp.json()["empty_poll"] == "null-id"
    assert api.admin("PATCH", "settings", json={"empty_poll": "nope"}).status_code == 400
    assert api.admin("PATCH", "settings", json={"colour": "red"}).status_code == 400
    assert api.admin("POST", "reset").status_code == 200
    assert api.admin("GET", "settings").json()["poll_semantics"] == "once"


def test_request_log_contents(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    api.update(created["IntegrationInstanceId"], {field_name("Event duration"): 1.5}, on_behalf="7")
    api.admin("GET", "state")
    [entry] = api.admin("GET", "requests").json()
    assert entry["method"] == "POST"
    assert entry["path"] == "/api/v2/workflows/instances/variables"
    assert entry["status"] == 200
    assert entry["on_behalf_of"] == "7"
    assert entry["body"] == {"TaskId": created["IntegrationInstanceId"], "Fields": {field_name("Event duration"): 1.5}}
    assert entry["client"].startswith("127.0.0.1:")
    assert "Authorization" not in str(entry) and "demo-token" not in str(entry)
    admin_log = api.admin("GET", "requests", params={"kind": "admin"}).json()
    assert [e["path"] for e in admin_log] == ["/_emulator/state", "/_emulator/requests"]
    assert api.admin("DELETE", "requests").status_code == 200
    assert api.admin("GET", "requests").json() == []


def test_admin_unknown_route(api: Api) -> None:
    assert api.admin("GET", "nothing").status_code == 404


# --------------------------------------------------------------------------- state file


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "emulator.json"
    with EmulatorServer(state_file=state_file) as server:
        api = Api(server.base_url)
        [created] = server.create_instances(EVENT_STEP)
        iid = created["IntegrationInstanceId"]
        assert api.poll().json()["IntegrationInstanceId"] == iid
        raw = f'{{"TaskId": {iid}, "Fields": {{"{field_name("Event duration")}": 0.1000}}}}'
        resp = api.post("/api/v2/workflows/instances/variables", data=raw, headers={"X-OnBehalfOf-Id": "s"})
        assert resp.status_code == 200
        token = server.mint_token(600)
        api.post("/api/v2/tasks", json={"Title": "keep me"}, headers={"X-OnBehalfOf-Id": "1"})
        server.update_settings(empty_poll="null")
    assert state_file.exists()
    with EmulatorServer(state_file=state_file) as server:
        api = Api(server.base_url, token=token)
        assert api.variables(iid)["Event duration"]["valueJson"] == "0.1000"
        assert api.poll().json() is None  # persisted settings and the handed-out status
        assert server.create_instances(EVENT_STEP)[0]["IntegrationInstanceId"] == iid + 1
        assert [t["title"] for t in server.snapshot()["tasks"]] == ["keep me"]
    # Explicit settings win over the persisted ones.
    with EmulatorServer(state_file=state_file, empty_poll="204") as server:
        api = Api(server.base_url)
        assert api.poll().json()["IntegrationInstanceId"] == iid + 1
        assert api.poll().status_code == 204


def test_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    state_file = tmp_path / "s.json"
    state_file.write_text("{not json")
    with pytest.raises(ValueError, match="state file"):
        EmulatorServer(state_file=state_file)


def test_stop_closes_keep_alive_connections() -> None:
    server = EmulatorServer().start()
    api = Api(server.base_url)
    assert api.get("/api/v2/workflows").status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        api.get("/api/v2/workflows")


def test_fault_path_filter(api: Api, emulator: EmulatorServer) -> None:
    emulator.set_faults(error_rate=1.0, error_statuses=[500], paths=["/api/users"])
    assert api.get("/api/v2/workflows").status_code == 200
    assert api.get("/api/users/search", params={"Query": "j"}).status_code == 500
    assert emulator.state.get_faults() is not None


def test_concurrent_pollers_get_each_instance_once(emulator: EmulatorServer) -> None:
    created = {c["IntegrationInstanceId"] for c in emulator.create_instances(EVENT_STEP, count=40)}
    results: list[list[int]] = [[] for _ in range(4)]

    def worker(out: list[int]) -> None:
        client = Api(emulator.base_url)
        while True:
            resp = client.poll()
            if resp.status_code == 204:
                break
            out.append(resp.json()["IntegrationInstanceId"])
        client.session.close()

    threads = [threading.Thread(target=worker, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    handed = [iid for out in results for iid in out]
    assert sorted(handed) == sorted(created)
    # One keep-alive connection per worker thread.
    assert len({e["client"] for e in emulator.request_log()}) == 4
