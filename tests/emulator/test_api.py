"""Contract of the emulated Workflowsoft /api/ endpoints, endpoint by endpoint, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import requests

from airflow_provider_workflowsoft.emulator import EmulatorServer

from .conftest import CRM_STEP, EVENT_STEP, KEYS, Api, field_name

# --------------------------------------------------------------------------- auth & tokens


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YWRtaW46eA=="}, {"Authorization": "Bearer"}],
)
def test_api_requires_a_valid_bearer_token(api: Api, headers: dict[str, str]) -> None:
    resp = api.get("/api/v2/workflows", token=None, headers=headers)
    assert resp.status_code == 401
    assert "Message" in resp.json()


def test_static_token_works(api: Api) -> None:
    assert api.get("/api/v2/workflows").status_code == 200


def test_mint_token_with_admin_basic_auth_and_expiry(api: Api) -> None:
    resp = api.get(
        "/api/v2/app/apitoken",
        token=None,
        params={"lifeTimeInSec": 1},
        auth=("admin@example.com", "admin-password"),
    )
    assert resp.status_code == 200
    token = resp.json()
    assert isinstance(token, str) and token.startswith("tok")
    assert api.get("/api/v2/workflows", token=token).status_code == 200
    time.sleep(1.1)
    expired = api.get("/api/v2/workflows", token=token)
    assert expired.status_code == 401
    assert "expired" in expired.json()["Message"]


def test_mint_token_with_bearer_and_default_lifetime(api: Api, emulator: EmulatorServer) -> None:
    resp = api.get("/api/v2/app/apitoken")
    assert resp.status_code == 200
    assert emulator.state.snapshot()["tokens"]["minted_active"] == 1


@pytest.mark.parametrize("auth", [("admin@example.com", "wrong"), ("someone", "admin-password")])
def test_mint_token_rejects_bad_admin_credentials(api: Api, auth: tuple[str, str]) -> None:
    resp = api.get("/api/v2/app/apitoken", token=None, auth=auth)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("lifetime", ["0", "-5", "abc", "1.5"])
def test_mint_token_rejects_bad_lifetime(api: Api, lifetime: str) -> None:
    resp = api.get("/api/v2/app/apitoken", params={"lifeTimeInSec": lifetime})
    assert resp.status_code == 400


@pytest.mark.parametrize(
    ("shape", "check"),
    [
        ("string", lambda r: isinstance(r.json(), str) and r.headers["Content-Type"].startswith("application/json")),
        ("object", lambda r: isinstance(r.json()["token"], str)),
        ("text", lambda r: r.headers["Content-Type"].startswith("text/plain") and r.text.startswith("tok")),
    ],
)
def test_token_shapes(
    api: Api, emulator: EmulatorServer, shape: str, check: Callable[[requests.Response], bool]
) -> None:
    emulator.update_settings(token_shape=shape)
    resp = api.get("/api/v2/app/apitoken", token=None, auth=emulator.admin_credentials)
    assert resp.status_code == 200
    assert check(resp)
    token = resp.text if shape == "text" else (resp.json() if shape == "string" else resp.json()["token"])
    assert api.get("/api/v2/workflows", token=token).status_code == 200


def test_expire_all_tokens_until_reset(api: Api, emulator: EmulatorServer) -> None:
    minted = emulator.mint_token(600)
    assert api.admin("POST", "tokens/expire").status_code == 200
    assert api.get("/api/v2/workflows").status_code == 401
    assert api.get("/api/v2/workflows", token=minted).status_code == 401
    # Admin Basic auth still mints a fresh, working token.
    fresh = api.get("/api/v2/app/apitoken", token=None, auth=emulator.admin_credentials).json()
    assert api.get("/api/v2/workflows", token=fresh).status_code == 200
    emulator.reset()
    assert api.get("/api/v2/workflows").status_code == 200


# --------------------------------------------------------------------------- directory


def test_list_workflows_search_and_limit(api: Api) -> None:
    assert [w["Id"] for w in api.get("/api/v2/workflows", params={"mode": "view"}).json()] == [1, 2, 3, 4]
    found = api.get("/api/v2/workflows", params={"searchTerm": "EVENT", "mode": "view", "limit": 100}).json()
    assert found == [{"Id": 1, "Title": "Event registration"}]
    assert len(api.get("/api/v2/workflows", params={"limit": 2}).json()) == 2
    assert api.get("/api/v2/workflows", params={"limit": "x"}).status_code == 400


def test_integration_steps_of_a_diagram(api: Api) -> None:
    assert api.get("/api/v2/workflows/1/tasks", params={"integration": "true"}).json() == [
        {"Id": 11, "Title": "Enrich event"}
    ]
    assert api.get("/api/v2/workflows/3/tasks", params={"integration": "true"}).json() == []
    assert api.get("/api/v2/workflows/99/tasks", params={"integration": "true"}).status_code == 404


def test_user_search(api: Api) -> None:
    by_name = api.get("/api/users/search", params={"Query": "jane", "entityType": "users", "limit": 15}).json()
    assert by_name == [{"Id": 2, "FullName": "Jane Roe", "Email": "jane.roe@example.com"}]
    by_email = api.get("/api/users/search", params={"Query": "OPS@"}).json()
    assert [u["Id"] for u in by_email] == [3]
    assert len(api.get("/api/users/search", params={"Query": "", "limit": 2}).json()) == 2
    assert api.get("/api/users/search", params={"Query": "nobody"}).json() == []


def test_unknown_endpoint_and_wrong_method(api: Api) -> None:
    assert api.get("/api/v2/nothing").status_code == 404
    resp = api.post("/api/v2/workflows", json={})
    assert resp.status_code == 405


# --------------------------------------------------------------------------- polling


def test_poll_hands_out_each_instance_once_oldest_first(api: Api, emulator: EmulatorServer) -> None:
    created = emulator.create_instances(EVENT_STEP, count=2)
    first, second = (c["IntegrationInstanceId"] for c in created)
    assert api.poll().json() == created[0]
    assert api.poll().json()["IntegrationInstanceId"] == second
    assert api.poll().status_code == 204
    assert first < second
    states = {i["IntegrationInstanceId"]: i["status"] for i in emulator.state.snapshot()["instances"]}
    assert states == {first: "handed_out", second: "handed_out"}


def test_poll_until_completed(api: Api, emulator: EmulatorServer) -> None:
    emulator.update_settings(poll_semantics="until-completed")
    [created] = emulator.create_instances(CRM_STEP, values={"Status": "Done"})
    instance_id = created["IntegrationInstanceId"]
    for _ in range(3):
        assert api.poll(CRM_STEP).json()["IntegrationInstanceId"] == instance_id
    assert api.complete(instance_id).status_code == 200
    assert api.poll(CRM_STEP).status_code == 204


@pytest.mark.parametrize(
    ("shape", "status", "body"),
    [
        ("204", 204, b""),
        ("null", 200, b"null"),
        ("{}", 200, b"{}"),
        ("[]", 200, b"[]"),
        ("empty200", 200, b""),
        ("null-id", 200, b'{"IntegrationInstanceId": null, "ProcessInstanceId": null}'),
    ],
)
def test_empty_poll_shapes(api: Api, emulator: EmulatorServer, shape: str, status: int, body: bytes) -> None:
    emulator.update_settings(empty_poll=shape)
    resp = api.poll()
    assert resp.status_code == status
    assert resp.content == body
    if body:
        json.loads(body)


@pytest.mark.parametrize("raw", [None, "", "abc", "1.5"])
def test_poll_needs_an_integer_id(api: Api, raw: str | None) -> None:
    params = {} if raw is None else {"id": raw}
    assert api.get("/api/v2/workflows/instances/new-integrations", params=params).status_code == 400


def test_poll_unknown_step(api: Api) -> None:
    assert api.poll(999).status_code == 404


# --------------------------------------------------------------------------- variables


def test_variables_match_the_documented_shape(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    resp = api.get(f"/api/v2/workflows/instances/tasks/{created['IntegrationInstanceId']}/variables")
    fields = resp.json()
    assert fields[0] == {
        "label": "Event name",
        "type": "String",
        "key": KEYS["Event name"],
        "options": None,
        "valueJson": '"Event Test"',
        "isReadonly": True,
        "isRequired": False,
    }
    by_label = {f["label"]: f for f in fields}
    assert by_label["Event duration"]["valueJson"] == "1640.0"
    assert by_label["Event exists"]["valueJson"] == "null"
    assert by_label["Category"]["options"] == ["Conference", "Workshop", "Webinar"]
    assert all(set(f) == {"label", "type", "key", "options", "valueJson", "isReadonly", "isRequired"} for f in fields)


def test_variables_unknown_instance(api: Api) -> None:
    assert api.get("/api/v2/workflows/instances/tasks/424242/variables").status_code == 404


def test_update_fields_keeps_decimal_text_exactly(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    iid = created["IntegrationInstanceId"]
    names = [
        field_name(label)
        for label in ("Event duration", "Event exists", "Event start", "Category", "Attendees", "Venue code")
    ]
    raw = (
        f'{{"TaskId": {iid}, "Fields": {{"{names[0]}": 12.50, "{names[1]}": true,'
        f' "{names[2]}": "2024-05-01T10:00:00+02:00", "{names[3]}": "Workshop", "{names[4]}": 250,'
        f' "{names[5]}": "V-1"}}}}'
    )
    resp = api.post(
        "/api/v2/workflows/instances/variables",
        data=raw,
        headers={"X-OnBehalfOf-Id": "system", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    values = {label: f["valueJson"] for label, f in api.variables(iid).items()}
    assert values["Event duration"] == "12.50"
    assert values["Event exists"] == "true"
    assert values["Event start"] == '"2024-05-01T10:00:00+02:00"'
    assert values["Category"] == '"Workshop"'
    assert values["Attendees"] == "250"
    assert values["Venue code"] == '"V-1"'
    [update] = emulator.state.snapshot()["instances"][0]["updates"]
    assert update["by"] == "system"


def test_decimal_accepts_numeric_string_and_null(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    iid = created["IntegrationInstanceId"]
    assert api.update(iid, {field_name("Event duration"): "7.25"}).status_code == 200
    assert api.variables(iid)["Event duration"]["valueJson"] == "7.25"
    assert api.update(iid, {field_name("Event duration"): None, field_name("Event exists"): None}).status_code == 200
    assert api.variables(iid)["Event duration"]["valueJson"] == "null"


@pytest.mark.parametrize(
    ("label", "value", "needle"),
    [
        ("Event name", "Other", "Event name"),  # read-only
        ("Event exists", "yes", "Event exists"),
        ("Event exists", 1, "Event exists"),
        ("Event start", "next tuesday", "ISO-8601"),
        ("Event start", 12, "ISO-8601"),
        ("Event duration", "lots", "Event duration"),
        ("Event duration", True, "Event duration"),
        ("Category", "Party", "allowed options"),
        ("Category", None, "null"),
        ("Venue code", 42, "Venue code"),
        ("Venue code", None, "null"),
        ("Attendees", 2.5, "Attendees"),
    ],
)
def test_bad_updates_are_rejected_all_or_nothing(
    api: Api, emulator: EmulatorServer, label: str, value: object, needle: str
) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    iid = created["IntegrationInstanceId"]
    before = api.variables(iid)
    # A valid field in the same body must not be applied either.
    companion = {field_name("Attendees"): 5} if label != "Attendees" else {field_name("Venue code"): "V"}
    resp = api.update(iid, {**companion, field_name(label): value})
    assert resp.status_code == 400
    assert needle in resp.json()["Message"]
    assert api.variables(iid) == before


def test_read_only_message_names_the_label(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    resp = api.update(created["IntegrationInstanceId"], {field_name("Event name"): "x"})
    assert resp.status_code == 400
    assert "Event name" in resp.json()["Message"] and "read-only" in resp.json()["Message"]


def test_update_unknown_field_task_and_missing_header(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    iid = created["IntegrationInstanceId"]
    resp = api.update(iid, {"field_deadbeef": 1})
    assert resp.status_code == 400 and "field_deadbeef" in resp.json()["Message"]
    assert api.update(777777, {field_name("Attendees"): 1}).status_code == 404
    assert api.update(iid, {field_name("Attendees"): 1}, on_behalf=None).status_code == 400
    assert api.update("abc", {}).status_code == 400
    bad_json = api.post("/api/v2/workflows/instances/variables", data="{nope", headers={"X-OnBehalfOf-Id": "system"})
    assert bad_json.status_code == 400


# --------------------------------------------------------------------------- completion


def test_complete_requires_required_fields_then_succeeds_once(api: Api, emulator: EmulatorServer) -> None:
    [created] = emulator.create_instances(EVENT_STEP)
    iid = created["IntegrationInstanceId"]
    resp = api.complete(iid)
    assert resp.status_code == 400
    assert "Venue code" in resp.json()["Message"]
    assert api.update(iid, {field_name("Venue code"): ""}).status_code == 200
    assert api.complete(iid).status_code == 400  # empty string counts as empty
    assert api.update(iid, {field_name("Venue code"): "HALL-A"}).status_code == 200
    done = api.complete(iid, on_behalf="42")
    assert done.status_code == 200
    again = api.complete(iid)
    assert again.status_code == 409
    assert again.json()["Message"] == f"Integration instance {iid} is already completed"
    late = api.update(iid, {field_name("Attendees"): 3})
    assert late.status_code == 409
    [instance] = emulator.state.snapshot()["instances"]
    assert instance["status"] == "completed"
    assert instance["completed_by"] == "42"
    assert instance["completed_at"]
    assert instance["fields"]["Attendees"] is None


def test_complete_error_names_every_empty_required_field() -> None:
    scenario = {
        "api_tokens": ["t"],
        "process_diagrams": [
            {
                "Id": 1,
                "Title": "P",
                "integration_steps": [
                    {
                        "Id": 5,
                        "Title": "S",
                        "fields": [
                            {"label": "A", "type": "String", "key": "a", "isRequired": True},
                            {"label": "B", "type": "Decimal?", "key": "b", "isRequired": True},
                            {"label": "C", "type": "String", "key": "c", "isRequired": True, "default": "ok"},
                        ],
                    }
                ],
            }
        ],
    }
    with EmulatorServer(scenario) as server:
        [created] = server.create_instances(5)
        api = Api(server.base_url, token="t")
        resp = api.complete(created["IntegrationInstanceId"])
        assert resp.status_code == 400
        message = resp.json()["Message"]
        assert "A" in message and "B" in message and ", C" not in message


@pytest.mark.parametrize(
    "body",
    [{"Action": "Approve", "CustomAction": "__AUTO__"}, {"Action": "Complete"}, ["Complete"]],
)
def test_complete_rejects_bad_body(api: Api, emulator: EmulatorServer, body: object) -> None:
    [created] = emulator.create_instances(CRM_STEP, values={"Status": "Open"})
    assert api.complete(created["IntegrationInstanceId"], body=body).status_code == 400


def test_complete_unknown_instance_and_missing_header(api: Api, emulator: EmulatorServer) -> None:
    assert api.complete(123456).status_code == 404
    [created] = emulator.create_instances(CRM_STEP, values={"Status": "Open"})
    assert api.complete(created["IntegrationInstanceId"], on_behalf=None).status_code == 400


# --------------------------------------------------------------------------- processes & tasks


def test_start_process_creates_one_instance_per_step(api: Api, emulator: EmulatorServer) -> None:
    resp = api.post(
        "/api/v2/workflows/start",
        json={"TemplateId": 1, "Fields": {"note": "hello"}},
        headers={"X-OnBehalfOf-Id": "1"},
    )
    assert resp.status_code == 200
    process = resp.json()
    assert process == {"Id": 1001, "Title": "Event registration #1001"}
    polled = api.poll().json()
    assert polled["ProcessInstanceId"] == 1001
    assert api.variables(polled["IntegrationInstanceId"])["Event duration"]["valueJson"] == "1640.0"
    [record] = emulator.state.snapshot()["processes"]
    assert record["created_by"] == 1 and record["fields"] == {"note": "hello"} and record["created_at"]
    no_steps = api.post(
        "/api/v2/workflows/start", json={"TemplateId": 3, "Fields": {}}, headers={"X-OnBehalfOf-Id": "2"}
    )
    assert no_steps.status_code == 200
    assert len(emulator.state.snapshot()["instances"]) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"TemplateId": 1, "Fields": {}}, 400),
        ({"X-OnBehalfOf-Id": "99"}, {"TemplateId": 1, "Fields": {}}, 400),
        ({"X-OnBehalfOf-Id": "system"}, {"TemplateId": 1, "Fields": {}}, 400),
        ({"X-OnBehalfOf-Id": "1"}, {"TemplateId": 99, "Fields": {}}, 404),
        ({"X-OnBehalfOf-Id": "1"}, {"TemplateId": "1", "Fields": {}}, 400),
        ({"X-OnBehalfOf-Id": "1"}, {"TemplateId": 1, "Fields": []}, 400),
    ],
)
def test_start_process_errors(api: Api, headers: dict[str, str], body: object, status: int) -> None:
    assert api.post("/api/v2/workflows/start", json=body, headers=headers).status_code == status


def test_create_task_defaults_assignee_and_records_everything(api: Api, emulator: EmulatorServer) -> None:
    resp = api.post(
        "/api/v2/tasks",
        json={"Title": "Call back", "Description": "ASAP", "Files": [{"name": "a.txt"}]},
        headers={"X-OnBehalfOf-Id": "2"},
    )
    assert resp.status_code == 200
    assert resp.json() == {"Id": 9001, "Title": "Call back", "Description": "ASAP"}
    assigned = api.post(
        "/api/v2/tasks", json={"Title": "Review", "AssignedUserId": 3}, headers={"X-OnBehalfOf-Id": "1"}
    )
    assert assigned.json()["Id"] == 9002
    first, second = emulator.state.snapshot()["tasks"]
    assert (first["created_by"], first["assigned_user_id"], first["files"]) == (2, 2, [{"name": "a.txt"}])
    assert (second["created_by"], second["assigned_user_id"], second["description"]) == (1, 3, None)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"Title": "x"}),
        ({"X-OnBehalfOf-Id": "77"}, {"Title": "x"}),
        ({"X-OnBehalfOf-Id": "1"}, {"Title": ""}),
        ({"X-OnBehalfOf-Id": "1"}, {"Description": "no title"}),
        ({"X-OnBehalfOf-Id": "1"}, {"Title": "x", "AssignedUserId": 77}),
    ],
)
def test_create_task_errors(api: Api, emulator: EmulatorServer, headers: dict[str, str], body: object) -> None:
    assert api.post("/api/v2/tasks", json=body, headers=headers).status_code == 400
    assert emulator.state.snapshot()["tasks"] == []


# --------------------------------------------------------------------------- error shapes


def test_error_shapes(api: Api, emulator: EmulatorServer) -> None:
    def unknown() -> requests.Response:
        return api.get("/api/v2/workflows/instances/tasks/4242/variables")

    assert unknown().json() == {"Message": "Integration instance 4242 not found"}
    emulator.update_settings(error_shape="error")
    assert unknown().json() == {"error": "Integration instance 4242 not found"}
    emulator.update_settings(error_shape="text")
    resp = unknown()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text == "Integration instance 4242 not found"
    emulator.update_settings(error_shape="html")
    resp = unknown()
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "<title>" in resp.text and "<p>Integration instance 4242 not found</p>" in resp.text
    assert api.get("/api/v2/workflows", token=None).headers["Content-Type"].startswith("text/html")


def test_connection_is_reused(api: Api) -> None:
    for _ in range(5):
        assert api.get("/api/v2/workflows").status_code == 200
    resp = api.get("/_emulator/requests", token=None)
    clients = {entry["client"] for entry in resp.json()}
    assert len(clients) == 1
