"""Bad input and bad answers: each error names what was wrong, and nothing is sent that should not be."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftConfigError,
    WorkflowsoftInputError,
    WorkflowsoftNotFoundError,
    WorkflowsoftResponseError,
    WorkflowsoftValidationError,
)
from airflow_provider_workflowsoft.api.fields import MAX_VALUE_JSON_CHARS
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from tests.conftest import BASE, FIELDS_PATH, UPDATE_PATH, page_fields


def test_malformed_value_json_from_server(rm: Any, client: WorkflowsoftClient) -> None:
    data = page_fields()
    data[3]["valueJson"] = "1640.0.0"
    rm.get(BASE + FIELDS_PATH, json=data)
    with pytest.raises(WorkflowsoftResponseError) as info:
        client.get_fields(42)
    assert "field 'Event duration' of integration instance 42 is not valid JSON" in str(info.value)


def test_huge_value_json_refused(rm: Any, client: WorkflowsoftClient) -> None:
    data = page_fields()
    data[0]["valueJson"] = json.dumps("x" * (MAX_VALUE_JSON_CHARS + 10))
    rm.get(BASE + FIELDS_PATH, json=data)
    with pytest.raises(WorkflowsoftResponseError, match="'Event name' of integration instance 42 is 1000012 "
                                                        "characters long"):
        client.get_fields(42)


def test_deeply_nested_value_json(rm: Any, client: WorkflowsoftClient) -> None:
    data = page_fields()
    data[0].update(type="Json", valueJson="[" * 100_000)
    rm.get(BASE + FIELDS_PATH, json=data)
    with pytest.raises(WorkflowsoftResponseError, match="'Event name' of integration instance 42"):
        client.get_fields(42)


def test_html_page_instead_of_json(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, text="<!DOCTYPE html><html><title>Sign in</title></html>",
           headers={"Content-Type": "text/html"})
    with pytest.raises(WorkflowsoftResponseError) as info:
        client.get_fields(42)
    assert str(info.value) == (
        f"Workflowsoft answered GET {FIELDS_PATH} with an HTML page instead of JSON: 'Sign in'"
    )


@pytest.mark.parametrize("call", [lambda c: c.start_process(3, on_behalf_of=9),
                                  lambda c: c.create_task("T", on_behalf_of=9)])
def test_empty_body_where_an_object_is_expected(rm: Any, client: WorkflowsoftClient, call: Any) -> None:
    rm.post(BASE + "/api/v2/workflows/start", text="")
    rm.post(BASE + "/api/v2/tasks", text="")
    with pytest.raises(WorkflowsoftResponseError, match="with an empty body where an object was expected"):
        call(client)


def test_object_where_a_list_is_expected(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows", json="oops")
    with pytest.raises(WorkflowsoftResponseError, match="str where a list of process diagrams was expected"):
        client.list_process_diagrams()


@pytest.mark.parametrize(
    ("label", "value", "expected"),
    [
        ("Event name", 12, "12 (int) is not a string"),
        ("Event exists", "yes please", "is not a boolean"),
        ("Event start", "31/12/2021", "is not an ISO 8601 date-time"),
        ("Event duration", "12,5", "is not a number"),
        ("Attendees", "3.5", "is not a whole number"),
        ("Status", "open ", "is not one of the options"),
        ("Locked", "z", "the field is read-only"),
    ],
)
def test_wrong_values_send_nothing(rm: Any, client: WorkflowsoftClient, label: str, value: Any,
                                   expected: str) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    post = rm.post(BASE + UPDATE_PATH, json=None)
    with pytest.raises(WorkflowsoftValidationError) as info:
        client.update_fields(42, {label: value})
    assert f"{label!r}" in str(info.value) and expected in str(info.value)
    assert isinstance(info.value, WorkflowsoftInputError)  # fails the task without retries
    assert not post.called


def test_unknown_labels_listed(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    post = rm.post(BASE + UPDATE_PATH, json=None)
    with pytest.raises(WorkflowsoftValidationError) as info:
        client.update_fields(42, {"Event durration": 1, "Zzz": 2})
    message = str(info.value)
    assert "'Event durration': no such field; did you mean 'Event duration'?" in message
    assert "'Zzz': no such field Known labels: 'Event name'" in message
    assert not post.called


def test_id_that_does_not_exist(rm: Any, client: WorkflowsoftClient) -> None:
    rm.get(BASE + "/api/v2/workflows/instances/tasks/999/variables", status_code=404,
           json={"Message": "Task 999 not found"})
    with pytest.raises(WorkflowsoftNotFoundError) as info:
        client.get_field_values(999)
    assert info.value.status == 404
    assert str(info.value) == (
        "Workflowsoft answered 404 to GET /api/v2/workflows/instances/tasks/999/variables: Task 999 not found"
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda c: c.get_fields("abc"), "integration_instance_id"),
        (lambda c: c.update_fields("4 2", {"x": 1}), "integration_instance_id"),
        (lambda c: c.complete_step("x", validate=False), "integration_instance_id"),
        (lambda c: c.poll_new_integration("step"), "integration_step_id"),
        (lambda c: c.list_integration_steps("P-1"), "process_diagram_id"),
        (lambda c: c.start_process("three", on_behalf_of=9), "process_diagram_id"),
    ],
)
def test_non_numeric_ids_refused_before_sending(rm: Any, client: WorkflowsoftClient, call: Any, name: str) -> None:
    with pytest.raises(WorkflowsoftInputError, match=f"{name} must be an integer id"):
        call(client)
    assert rm.request_history == []


def test_assignee_given_by_name_is_looked_up_not_refused(rm: Any, client: WorkflowsoftClient) -> None:
    # assigned_user_id takes a user id, an email or a full name: a name is looked up, never sent as is
    search = rm.get(BASE + "/api/users/search", json=[])
    with pytest.raises(WorkflowsoftInputError):
        client.create_task("T", assigned_user_id="bob", on_behalf_of=9)
    assert search.called and all(r.method == "GET" for r in rm.request_history)


def test_connection_without_token(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT", "workflowsoft://api.example.com")
    with pytest.raises(WorkflowsoftConfigError, match="has no API token"):
        WorkflowsoftHook().list_process_diagrams()
    assert rm.request_history == []


def test_connection_without_host_uses_default(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT", json.dumps({"conn_type": "workflowsoft",
                                                                       "password": "tok-SECRET-1"}))
    rm.get(BASE + "/api/v2/workflows", json=[])
    assert WorkflowsoftHook().list_process_diagrams() == []
    assert rm.request_history[0].url.startswith("https://api.workflowsoft.com/api/v2/workflows")


def test_connection_with_non_numeric_extra(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT", "workflowsoft://:tok-SECRET-1@api.example.com?max_retries=lots")
    with pytest.raises(WorkflowsoftConfigError) as info:
        WorkflowsoftHook().list_process_diagrams()
    assert "extra 'max_retries' is 'lots'" in str(info.value) and "tok-SECRET-1" not in str(info.value)
    assert rm.request_history == []
