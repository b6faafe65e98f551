"""The sync client against requests-mock: every call as the page shows it, tokens, retries, creates."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import requests

from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftAuthError,
    WorkflowsoftBadRequestError,
    WorkflowsoftConnectionError,
    WorkflowsoftError,
    WorkflowsoftInputError,
    WorkflowsoftLookupError,
    WorkflowsoftNotFoundError,
    WorkflowsoftTransientError,
    WorkflowsoftUnknownOutcomeError,
    WorkflowsoftValidationError,
)
from tests.conftest import (
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    BASE,
    FIELDS_PATH,
    KEY_DURATION,
    KEY_NAME,
    MINTED,
    TOKEN,
    UPDATE_PATH,
    FakeClock,
    SleepRecorder,
    body_of,
    page_fields,
)

MakeClient = Callable[..., WorkflowsoftClient]
TOKEN_URL = BASE + "/api/v2/app/apitoken"
READ_HEADERS = {"Accept": "application/json", "Authorization": f"Bearer {TOKEN}"}
WRITE_HEADERS = {**READ_HEADERS, "Content-Type": "application/json", "X-OnBehalfOf-Id": "system"}


def assert_headers(request: Any, expected: dict[str, str]) -> None:
    for name, value in expected.items():
        assert request.headers.get(name) == value, name
    if "Content-Type" not in expected:
        assert "Content-Type" not in request.headers


def test_list_process_diagrams(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows", json=[{"Id": 1, "Title": "Process name"}])
    assert client.list_process_diagrams("Proc") == [{"Id": 1, "Title": "Process name"}]
    request = rm.request_history[0]
    assert request.method == "GET" and request.path == "/api/v2/workflows"
    assert request.qs == {"searchterm": ["proc"], "mode": ["view"], "limit": ["100"]}
    assert "searchTerm=Proc" in request.url
    assert_headers(request, READ_HEADERS)
    assert request.timeout == (10.0, 30.0)


def test_list_integration_steps(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows/5/tasks", json=[{"Id": 1, "Title": "Integration step name"}])
    assert client.list_integration_steps(5) == [{"Id": 1, "Title": "Integration step name"}]
    assert rm.request_history[0].qs == {"integration": ["true"]}
    assert_headers(rm.request_history[0], READ_HEADERS)


def test_find_by_title_case_insensitive_and_clear_errors(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows/5/tasks",
           json=[{"Id": 1, "Title": "Enrich"}, {"Id": 2, "Title": "Twice"}, {"Id": 3, "Title": "twice"}])
    assert client.find_integration_step(5, "ENRICH")["Id"] == 1
    with pytest.raises(WorkflowsoftLookupError) as none:
        client.find_integration_step(5, "Missing")
    assert "No integration step titled 'Missing' in process diagram 5" in str(none.value)
    assert "'Enrich' (Id 1)" in str(none.value)
    with pytest.raises(WorkflowsoftLookupError) as several:
        client.find_integration_step(5, "twice")
    assert "2 integration steps are titled 'twice'" in str(several.value)
    rm.get(BASE + "/api/v2/workflows", json=[])
    with pytest.raises(WorkflowsoftLookupError, match=r"No process diagram titled 'X'.*found: none"):
        client.find_process_diagram("X")


def test_misspelt_diagram_name_gets_a_suggestion(rm: Any, client: WorkflowsoftClient) -> None:
    """The server's search by a misspelt name finds nothing: the lookup compares with every diagram and says
    which one was probably meant (the same rule as a wrong field label), as a wrong step name is answered."""
    diagrams = [{"Id": 1, "Title": "Event registration"}, {"Id": 2, "Title": "Customer follow-up"}]
    rm.get(BASE + "/api/v2/workflows", additional_matcher=lambda r: "searchterm" in r.url.lower(), json=[])
    rm.get(BASE + "/api/v2/workflows", additional_matcher=lambda r: "searchterm" not in r.url.lower(),
           json=diagrams)
    with pytest.raises(WorkflowsoftLookupError) as info:
        client.find_process_diagram("Event registation")
    assert "No process diagram titled 'Event registation' among the process diagrams" in str(info.value)
    assert str(info.value).endswith("; did you mean 'Event registration'?")
    assert "'Customer follow-up' (Id 2)" in str(info.value)
    rm.get(BASE + "/api/v2/workflows/1/tasks", json=[{"Id": 11, "Title": "Enrich event"}])
    with pytest.raises(WorkflowsoftLookupError, match=r"did you mean 'Enrich event'\?"):
        client.find_integration_step(1, "Enrich evnt")


@pytest.mark.parametrize(
    "answer",
    [{"status_code": 204}, {"text": ""}, {"text": "null"}, {"json": {}}, {"json": []},
     {"json": {"IntegrationInstanceId": None, "ProcessInstanceId": None}}],
)
def test_poll_nothing_new(rm: Any, client: WorkflowsoftClient, answer: dict[str, Any]) -> None:
    rm.get(BASE + "/api/v2/workflows/instances/new-integrations", **answer)
    assert client.poll_new_integration(7) is None
    assert rm.request_history[0].qs == {"id": ["7"]}


def test_poll_new_instance(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows/instances/new-integrations",
           json={"IntegrationInstanceId": 2, "ProcessInstanceId": 2})
    assert client.poll_new_integration("7") == {"IntegrationInstanceId": 2, "ProcessInstanceId": 2}
    assert_headers(rm.request_history[0], READ_HEADERS)


def test_get_fields_and_values(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    fields = client.get_fields(42)
    assert [f.label for f in fields][:4] == ["Event name", "Event exists", "Event start", "Event duration"]
    assert rm.request_history[0].qs == {}
    assert_headers(rm.request_history[0], READ_HEADERS)
    assert client.get_field_values(42)["Event duration"] == Decimal("1640.0")


def test_update_fields_sends_the_page_body(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    rm.post(BASE + UPDATE_PATH, json=None)
    written = client.update_fields(42, {"Event name": "Value", KEY_DURATION: Decimal("1640.123456789012345678")})
    post = rm.request_history[-1]
    assert post.method == "POST" and post.path == UPDATE_PATH
    assert_headers(post, WRITE_HEADERS)
    assert post.text == (
        '{"TaskId":42,"Fields":{"field_9aae87b4_2b01_43eb_be17_d0080a225f54":"Value",'
        '"field_4dc8a917_da0c_4cf7_a43e_064785e42785":1640.123456789012345678}}'
    )
    assert written == {"Event name": "Value", "Event duration": "1640.123456789012345678"}


def test_update_fields_on_behalf_of(rm: Any, make_client: MakeClient) -> None:
    client = make_client(on_behalf_of="17")
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    rm.post(BASE + UPDATE_PATH, text="")
    client.update_fields(42, {"Event exists": False})
    assert rm.request_history[-1].headers["X-OnBehalfOf-Id"] == "17"
    assert body_of(rm.request_history[-1])["Fields"] == {"field_3db9d864_d2ea_43f5_8907_2a350c5708d5": False}


def test_invalid_update_sends_nothing(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    post = rm.post(BASE + UPDATE_PATH, json=None)
    with pytest.raises(WorkflowsoftValidationError) as info:
        client.update_fields(42, {"Evnt name": "x", "Locked": "y", "Status": "Nope"})
    assert len(info.value.problems) == 3
    assert not post.called
    assert [r.method for r in rm.request_history] == ["GET"]


def test_complete_step(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    patch = rm.patch(BASE + "/api/v2/tasks/42/action", json={})
    assert client.complete_step(42) == {"IntegrationInstanceId": 42, "completed": True, "already_completed": False}
    assert patch.call_count == 1
    request = patch.last_request
    assert body_of(request) == {"Action": "Complete", "CustomAction": "__AUTO__"}
    assert_headers(request, WRITE_HEADERS)


def test_complete_step_refuses_empty_required_without_patch(rm: Any, client: WorkflowsoftClient) -> None:
    data = page_fields()
    data[0].update(isRequired=True, valueJson='""')
    data[3].update(isRequired=True, valueJson="null")
    get = rm.get(BASE + FIELDS_PATH, json=data)
    patch = rm.patch(BASE + "/api/v2/tasks/42/action", json={})
    with pytest.raises(WorkflowsoftValidationError) as info:
        client.complete_step(42)
    assert "'Event name', 'Event duration'" in str(info.value)
    assert "Nothing was sent" in str(info.value)
    assert get.call_count == 1 and not patch.called
    client.complete_step(42, validate=False)
    assert get.call_count == 1 and patch.call_count == 1


def test_search_and_find_user(rm: Any, client: WorkflowsoftClient) -> None:
    users = [{"Id": 1, "FullName": "John Doe", "Email": "john@mail.com"},
             {"Id": 2, "FullName": "John Doe", "Email": "jd2@mail.com"},
             {"Id": 3, "FullName": "Ann Lee", "Email": "ann@mail.com"}]
    rm.get(BASE + "/api/users/search", json=users)
    assert client.search_users("john") == users
    assert rm.request_history[0].qs == {"query": ["john"], "entitytype": ["users"], "limit": ["15"]}
    assert "Query=john" in rm.request_history[0].url
    assert client.find_user("ANN@mail.com")["Id"] == 3
    assert client.find_user(3)["Email"] == "ann@mail.com"
    with pytest.raises(WorkflowsoftLookupError) as several:
        client.find_user("John Doe")
    assert "2 Workflowsoft users match 'John Doe'" in str(several.value)
    assert "jd2@mail.com" in str(several.value)
    with pytest.raises(WorkflowsoftLookupError) as none:
        client.find_user("nobody")
    assert "No Workflowsoft user has the id, email or full name 'nobody'" in str(none.value)
    assert "John Doe <john@mail.com> (Id 1)" in str(none.value)


def test_start_process(rm: Any, client: WorkflowsoftClient) -> None:
    rm.post(BASE + "/api/v2/workflows/start", json={"Id": 1, "Title": "Process title"})
    assert client.start_process(3, on_behalf_of=9) == {"Id": 1, "Title": "Process title"}
    request = rm.request_history[0]
    assert request.text == '{"TemplateId":3,"Fields":{}}'
    assert_headers(request, {**WRITE_HEADERS, "X-OnBehalfOf-Id": "9"})
    client.start_process(3, fields={KEY_NAME: Decimal("2.50")}, on_behalf_of="9")
    assert rm.request_history[1].text == '{"TemplateId":3,"Fields":{"field_9aae87b4_2b01_43eb_be17_d0080a225f54":2.50}}'


@pytest.mark.parametrize("on_behalf_of", [None, "", "system", " System "])
def test_start_and_task_refuse_system_before_sending(rm: Any, client: WorkflowsoftClient,
                                                     on_behalf_of: Any) -> None:
    """Starts and tasks are made on behalf of a user (the API page sends a user's Id there): without one,
    the error names the parameter and what to pass, and nothing is sent."""
    start = rm.post(BASE + "/api/v2/workflows/start", json={"Id": 1, "Title": "P"})
    task = rm.post(BASE + "/api/v2/tasks", json={"Id": 1, "Title": "T"})
    for call in (lambda: client.start_process(3, on_behalf_of=on_behalf_of),
                 lambda: client.create_task("T", on_behalf_of=on_behalf_of)):
        with pytest.raises(WorkflowsoftValidationError) as info:
            call()
        message = str(info.value)
        assert "needs on_behalf_of" in message and "a user id, an email or a full name" in message
        assert "'system'" in message and "Nothing was sent" in message
        assert isinstance(info.value, WorkflowsoftInputError)
    assert rm.request_history == [] and not start.called and not task.called


def test_start_uses_the_connections_user(rm: Any, make_client: MakeClient) -> None:
    """A connection whose on_behalf_of is a user makes that user the default of starts and tasks."""
    client = make_client(on_behalf_of="7")
    rm.post(BASE + "/api/v2/workflows/start", json={"Id": 1, "Title": "P"})
    client.start_process(3)
    assert rm.request_history[-1].headers["X-OnBehalfOf-Id"] == "7"
    assert client.resolve_on_behalf_of(None) == "7"  # and of field updates and completions


def test_create_task(rm: Any, client: WorkflowsoftClient) -> None:
    rm.post(BASE + "/api/v2/tasks", json={"Id": 1, "Title": "Task name", "Description": "D"})
    result = client.create_task("Task name", assigned_user_id=5, description="D", files=[{"Name": "a.txt"}],
                                on_behalf_of="9")
    assert result == {"Id": 1, "Title": "Task name", "Description": "D"}
    request = rm.request_history[0]
    assert body_of(request) == {"Title": "Task name", "AssignedUserId": 5, "Description": "D",
                                "Files": [{"Name": "a.txt"}]}
    assert_headers(request, {**WRITE_HEADERS, "X-OnBehalfOf-Id": "9"})
    client.create_task("Only title", on_behalf_of=9)
    assert body_of(rm.request_history[1]) == {"Title": "Only title"}


# -- tokens ------------------------------------------------------------------------------------------


def test_given_token_is_reported_and_used(rm: Any, make_client: MakeClient) -> None:
    seen: list[str] = []
    client = make_client(on_token=seen.append)
    assert seen == [TOKEN]
    rm.get(BASE + "/api/v2/workflows", json=[])
    client.list_process_diagrams()
    assert not any(r.path == "/api/v2/app/apitoken" for r in rm.request_history)


def test_minted_token_once_per_lifetime_and_renewed(rm: Any, make_client: MakeClient, clock: FakeClock) -> None:
    tokens = iter(["first-TOKEN-1", "second-TOKEN-2"])
    mint = rm.get(TOKEN_URL, text=lambda request, context: next(tokens))
    diagrams = rm.get(BASE + "/api/v2/workflows", json=[])
    seen: list[str] = []
    client = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD, token_lifetime_seconds=600,
                         on_token=seen.append)
    other = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD, token_lifetime_seconds=600)
    for _ in range(3):
        client.list_process_diagrams()
        other.list_process_diagrams()
    assert mint.call_count == 1
    request = mint.last_request
    assert request.qs == {"lifetimeinsec": ["600"]}
    expected = "Basic " + base64.b64encode(f"{ADMIN_LOGIN}:{ADMIN_PASSWORD}".encode()).decode()
    assert request.headers["Authorization"] == expected
    assert diagrams.last_request.headers["Authorization"] == "Bearer first-TOKEN-1"
    assert seen == ["first-TOKEN-1"]
    clock.now += 600 - 61
    client.list_process_diagrams()
    assert mint.call_count == 1
    clock.now += 2  # within a minute of expiry: renewed
    client.list_process_diagrams()
    assert mint.call_count == 2
    assert diagrams.last_request.headers["Authorization"] == "Bearer second-TOKEN-2"
    assert seen == ["first-TOKEN-1", "second-TOKEN-2"]


def test_401_renews_minted_token_once(rm: Any, make_client: MakeClient) -> None:
    tokens = iter(['{"token": "old-TOKEN-1"}', '{"token": "new-TOKEN-2"}', '{"token": "third-TOKEN-3"}'])
    mint = rm.get(TOKEN_URL, text=lambda request, context: next(tokens))
    rm.get(BASE + "/api/v2/workflows", [{"status_code": 401, "json": {"Message": "expired"}},
                                        {"json": [{"Id": 1, "Title": "P"}]}])
    client = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD)
    assert client.list_process_diagrams() == [{"Id": 1, "Title": "P"}]
    assert mint.call_count == 2
    assert rm.request_history[-1].headers["Authorization"] == "Bearer new-TOKEN-2"
    rm.get(BASE + "/api/v2/workflows", status_code=401, json={"Message": "denied"})
    with pytest.raises(WorkflowsoftAuthError) as info:
        client.list_process_diagrams()
    assert mint.call_count == 3  # once more, not in a loop
    assert isinstance(info.value, WorkflowsoftInputError)  # fails the task without retries


def test_401_with_given_token_is_not_retried(rm: Any, client: WorkflowsoftClient, sleep: SleepRecorder) -> None:
    diagrams = rm.get(BASE + "/api/v2/workflows", status_code=401, json={"Message": "Invalid token"})
    with pytest.raises(WorkflowsoftAuthError) as info:
        client.list_process_diagrams()
    assert diagrams.call_count == 1 and sleep.calls == []
    assert str(info.value) == "Workflowsoft answered 401 to GET /api/v2/workflows: Invalid token"


def test_auth_errors_name_the_settings_never_the_secret(rm: Any, make_client: MakeClient) -> None:
    """A refused token, or refused administrator credentials, names where they come from (the config's label:
    the hook puts the connection id there) so the user knows what to fix; the secret is never in it."""
    rm.get(BASE + "/api/v2/workflows", status_code=403, json={"Message": "Forbidden"})
    label = "the Airflow connection 'workflowsoft_prod'"
    with pytest.raises(WorkflowsoftAuthError) as info:
        make_client(label=label).list_process_diagrams()
    assert str(info.value) == ("Workflowsoft answered 403 to GET /api/v2/workflows: Forbidden. Check the API token "
                               f"(or the administrator login and password) of {label}")
    assert TOKEN not in str(info.value) and info.value.credentials_of == label
    rm.get(TOKEN_URL, status_code=401, text="Unauthorized")
    with pytest.raises(WorkflowsoftAuthError, match="administrator login or password was refused") as minted:
        make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD, label=label).list_process_diagrams()
    assert label in str(minted.value) and ADMIN_PASSWORD not in str(minted.value)


def test_bad_admin_credentials(rm: Any, make_client: MakeClient) -> None:
    rm.get(TOKEN_URL, status_code=401, text="Unauthorized")
    client = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD)
    with pytest.raises(WorkflowsoftAuthError, match="administrator login or password was refused") as info:
        client.list_process_diagrams()
    assert ADMIN_PASSWORD not in str(info.value)


# -- retries -----------------------------------------------------------------------------------------


def test_5xx_and_429_are_retried_with_backoff(rm: Any, make_client: MakeClient, sleep: SleepRecorder) -> None:
    client = make_client(max_retries=4, rand=lambda: 1.0)
    rm.get(BASE + "/api/v2/workflows", [{"status_code": 500}, {"status_code": 502}, {"status_code": 503},
                                        {"status_code": 429}, {"json": []}])
    assert client.list_process_diagrams() == []
    assert sleep.calls == [0.5, 1.0, 2.0, 4.0]


def test_retries_run_out(rm: Any, make_client: MakeClient, sleep: SleepRecorder) -> None:
    client = make_client(max_retries=2)
    mock = rm.get(BASE + "/api/v2/workflows", status_code=503, json={"message": "maintenance"})
    with pytest.raises(WorkflowsoftTransientError) as info:
        client.list_process_diagrams()
    assert mock.call_count == 3 and len(sleep.calls) == 2
    assert not isinstance(info.value, WorkflowsoftInputError)
    assert (info.value.status, info.value.method, info.value.path, info.value.server_message) == (
        503, "GET", "/api/v2/workflows", "maintenance"
    )


def test_retry_after_honoured_and_capped(rm: Any, make_client: MakeClient, sleep: SleepRecorder) -> None:
    client = make_client(retry_after_max=20.0)
    rm.get(BASE + "/api/v2/workflows", [{"status_code": 429, "headers": {"Retry-After": "7"}},
                                        {"status_code": 429, "headers": {"Retry-After": "3600"}},
                                        {"json": []}])
    client.list_process_diagrams()
    assert sleep.calls == [7.0, 20.0]


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_4xx_never_retried(rm: Any, client: WorkflowsoftClient, sleep: SleepRecorder, status: int) -> None:
    mock = rm.get(BASE + "/api/v2/workflows", status_code=status, json={"Message": "nope"})
    with pytest.raises(WorkflowsoftError) as info:
        client.list_process_diagrams()
    assert mock.call_count == 1 and sleep.calls == []
    assert isinstance(info.value, WorkflowsoftInputError)  # fails the task without retries


def test_connection_errors_retried_for_reads(rm: Any, client: WorkflowsoftClient, sleep: SleepRecorder) -> None:
    rm.get(BASE + "/api/v2/workflows", [{"exc": requests.exceptions.ReadTimeout("Read timed out")},
                                        {"exc": requests.exceptions.ConnectionError("Connection refused")},
                                        {"json": []}])
    assert client.list_process_diagrams() == []
    assert len(sleep.calls) == 2


def test_unreachable_after_retries(rm: Any, make_client: MakeClient) -> None:
    client = make_client(max_retries=1)
    rm.get(BASE + "/api/v2/workflows", exc=requests.exceptions.ConnectionError("Connection refused"))
    with pytest.raises(WorkflowsoftConnectionError) as info:
        client.list_process_diagrams()
    assert str(info.value) == "Could not reach Workflowsoft for GET /api/v2/workflows: Connection refused"
    assert not isinstance(info.value, WorkflowsoftInputError)


CREATES = [
    ("start", "/api/v2/workflows/start", lambda c: c.start_process(3, on_behalf_of=9)),
    ("task", "/api/v2/tasks", lambda c: c.create_task("T", on_behalf_of=9)),
]


@pytest.mark.parametrize(("name", "path", "call"), CREATES)
@pytest.mark.parametrize(
    "first",
    [{"exc": requests.exceptions.ReadTimeout("Read timed out")}, {"status_code": 500}, {"status_code": 502},
     {"status_code": 504}, {"exc": requests.exceptions.ConnectionError("Connection aborted")}],
)
def test_creates_not_resent_when_outcome_unknown(
    rm: Any, client: WorkflowsoftClient, sleep: SleepRecorder, name: str, path: str, call: Any, first: Any
) -> None:
    mock = rm.post(BASE + path, [first, {"json": {"Id": 1, "Title": "x"}}])
    with pytest.raises(WorkflowsoftUnknownOutcomeError) as info:
        call(client)
    assert mock.call_count == 1 and sleep.calls == []
    assert f"POST {path}" in str(info.value) and "not sent again" in str(info.value)


@pytest.mark.parametrize(("name", "path", "call"), CREATES)
@pytest.mark.parametrize(
    "first",
    [{"exc": requests.exceptions.ConnectionError("Connection refused")},
     {"exc": requests.exceptions.ConnectTimeout("connect timed out")},
     {"status_code": 503}, {"status_code": 429, "headers": {"Retry-After": "2"}}],
)
def test_creates_resent_when_surely_not_acted(
    rm: Any, client: WorkflowsoftClient, sleep: SleepRecorder, name: str, path: str, call: Any, first: Any
) -> None:
    mock = rm.post(BASE + path, [first, {"json": {"Id": 1, "Title": "x"}}])
    assert call(client)["Id"] == 1
    assert mock.call_count == 2 and len(sleep.calls) == 1


def test_error_carries_server_message_from_html(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows/instances/tasks/9/variables", status_code=404,
           text="<html><head><title>Instance not found</title></head><body>...</body></html>",
           headers={"Content-Type": "text/html"})
    with pytest.raises(WorkflowsoftNotFoundError) as info:
        client.get_fields(9)
    assert str(info.value) == (
        "Workflowsoft answered 404 to GET /api/v2/workflows/instances/tasks/9/variables: Instance not found"
    )


def test_bad_request_message(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    rm.post(BASE + UPDATE_PATH, status_code=400, json={"Message": "Field is read only"})
    with pytest.raises(WorkflowsoftBadRequestError, match="400 to POST /api/v2/workflows/instances/variables: "
                                                          "Field is read only"):
        client.update_fields(42, {"Event name": "x"})


# -- secrets -----------------------------------------------------------------------------------------


def test_no_secret_in_logs_errors_or_repr(rm: Any, make_client: MakeClient, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    rm.get(TOKEN_URL, text=MINTED)
    rm.get(BASE + "/api/v2/workflows", [{"status_code": 503}, {"status_code": 400,
                                        "json": {"Message": f"bad token {MINTED} for {ADMIN_PASSWORD}"}}])
    client = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD)
    with pytest.raises(WorkflowsoftBadRequestError) as info:
        client.list_process_diagrams()
    for text in (str(info.value), repr(info.value), repr(client), repr(client.config), caplog.text):
        assert MINTED not in text and ADMIN_PASSWORD not in text
    assert "bad token *** for ***" in str(info.value)
    token_client = make_client()
    assert TOKEN not in repr(token_client.config) and TOKEN not in repr(token_client)
