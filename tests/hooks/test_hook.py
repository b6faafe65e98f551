"""WorkflowsoftHook: the connection (JSON and URI env vars), extras, test_connection, masking, provider info."""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import distribution, entry_points
from typing import Any
from unittest import mock

import pytest
import requests

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.errors import WorkflowsoftConfigError
from airflow_provider_workflowsoft.connection_form import EXTRA_FIELDS
from airflow_provider_workflowsoft.get_provider_info import get_provider_info
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS, AirflowNotFoundException
from tests.conftest import ADMIN_LOGIN, ADMIN_PASSWORD, BASE, MINTED, TOKEN, SleepRecorder

ENV = "AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT"


def set_json(monkeypatch: pytest.MonkeyPatch, **conn: Any) -> None:
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "workflowsoft", **conn}))


def test_defaults_of_the_hook() -> None:
    assert WorkflowsoftHook.default_conn_name == "workflowsoft_default"
    assert WorkflowsoftHook.conn_type == "workflowsoft"
    assert WorkflowsoftHook.hook_name == "Workflowsoft"
    assert WorkflowsoftHook().workflowsoft_conn_id == "workflowsoft_default"


def test_json_connection_with_token(monkeypatch: pytest.MonkeyPatch) -> None:
    set_json(monkeypatch, host="api.example.com/", password=TOKEN)
    config = WorkflowsoftHook().config
    assert config.base_url == "https://api.example.com"
    assert config.api_token == TOKEN and not config.mints_tokens
    assert (config.token_lifetime_seconds, config.timeout, config.max_retries, config.on_behalf_of,
            config.verify_ssl) == (3600, 30.0, 5, "system", True)


def test_uri_connection_with_admin_credentials_and_string_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        ENV,
        "workflowsoft://admin%40example.com:admin-PASSWORD-xyz789@api.example.com"
        "?token_lifetime_seconds=600&timeout=12.5&max_retries=2&on_behalf_of=17&verify_ssl=false",
    )
    with pytest.warns(DeprecationWarning, match="'token_lifetime_seconds' is deprecated: rename it 'lifetime_seconds'"):
        config = WorkflowsoftHook().config  # the extra's older name still works, and says so
    assert config.login == ADMIN_LOGIN and config.password == ADMIN_PASSWORD and config.mints_tokens
    assert config.base_url == "https://api.example.com"
    assert (config.token_lifetime_seconds, config.timeout, config.max_retries, config.on_behalf_of,
            config.verify_ssl) == (600, 12.5, 2, "17", False)


def test_no_host_uses_default_and_empty_extras_are_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    set_json(monkeypatch, password=TOKEN, extra={name: "" for name in EXTRA_FIELDS})
    config = WorkflowsoftHook().config
    assert config.base_url == "https://api.workflowsoft.com"
    assert (config.token_lifetime_seconds, config.timeout, config.max_retries, config.on_behalf_of,
            config.verify_ssl) == (3600, 30.0, 5, "system", True)


@pytest.mark.parametrize(
    ("extra", "value", "expected"),
    [("timeout", "abc", "a number > 0"), ("max_retries", "many", "a whole number >= 0"),
     ("max_retries", "1.5", "a whole number >= 0"), ("verify_ssl", "perhaps", "true or false"),
     ("timeout", "-1", "a number > 0"), ("max_requests_per_second", "fast", "a number > 0"),
     ("max_requests_per_second", "0", "a number > 0"), ("max_requests_per_second", "-5", "a number > 0"),
     ("max_requests_per_second", "nan", "a number > 0")],
)
def test_malformed_extras(monkeypatch: pytest.MonkeyPatch, extra: str, value: str, expected: str) -> None:
    set_json(monkeypatch, password=TOKEN, extra={extra: value})
    with pytest.raises(WorkflowsoftConfigError) as info:
        _ = WorkflowsoftHook().config
    assert f"extra {extra!r} is {value!r}" in str(info.value)
    assert expected in str(info.value)


def test_boolean_and_empty_extras_are_read_by_protocols_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    # One reading of true/false texts (protocol.to_bool, strict) and of "missing" (protocol.blank), not the hook's own.
    set_json(monkeypatch, password=TOKEN, extra={"verify_ssl": " Off ", "timeout": "  "})
    with mock.patch.object(protocol, "to_bool", wraps=protocol.to_bool) as to_bool, \
            mock.patch.object(protocol, "blank", wraps=protocol.blank) as blank:
        config = WorkflowsoftHook().config
    assert (config.verify_ssl, config.timeout) == (False, 30.0)
    to_bool.assert_called_once_with(" Off ", strict=True)
    blank.assert_any_call("  ")


def test_max_requests_per_second_extra_paces_the_hooks_client(monkeypatch: pytest.MonkeyPatch) -> None:
    set_json(monkeypatch, password=TOKEN, extra={"max_requests_per_second": "50"})
    hook = WorkflowsoftHook()
    assert hook.config.max_requests_per_second == 50.0
    assert hook.client.limiter.rate() == 50.0
    set_json(monkeypatch, password=TOKEN, extra={"max_requests_per_second": ""})  # empty: no known limit
    assert WorkflowsoftHook().config.max_requests_per_second is None
    assert WorkflowsoftHook().client.limiter.rate() is None


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_timeout_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    set_json(monkeypatch, password=TOKEN, extra={"timeout": value})
    with pytest.raises(WorkflowsoftConfigError, match=rf"timeout.*{value}"):
        _ = WorkflowsoftHook().config


def test_missing_token(monkeypatch: pytest.MonkeyPatch) -> None:
    set_json(monkeypatch, host="api.example.com")
    with pytest.raises(WorkflowsoftConfigError, match="'workflowsoft_default' has no API token"):
        _ = WorkflowsoftHook().config
    set_json(monkeypatch, login="admin")
    with pytest.raises(WorkflowsoftConfigError, match="has a login but no password"):
        _ = WorkflowsoftHook().config


def test_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    with pytest.raises(AirflowNotFoundException, match="nope"):
        _ = WorkflowsoftHook("nope").config
    ok, message = WorkflowsoftHook("nope").test_connection()
    assert ok is False and "nope" in message


def test_test_connection_true(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, password=TOKEN)
    rm.get(BASE + "/api/v2/workflows", json=[{"Id": 1, "Title": "P"}])
    ok, message = WorkflowsoftHook().test_connection()
    assert ok is True
    assert message == "Connected to https://api.workflowsoft.com (a process diagram visible)"
    assert rm.call_count == 1 and rm.request_history[0].qs["limit"] == ["1"]


def test_test_connection_bad_token(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, password=TOKEN)
    rm.get(BASE + "/api/v2/workflows", status_code=401, json={"Message": f"token {TOKEN} rejected"})
    ok, message = WorkflowsoftHook().test_connection()
    assert ok is False
    assert "refused the credentials (HTTP 401)" in message and "check the API token" in message
    assert TOKEN not in message


def test_refused_credentials_name_the_connection(monkeypatch: pytest.MonkeyPatch, emulator: Any) -> None:
    """A refused token or refused administrator credentials name the connection to fix (never the secret),
    from the hook's sync client, its async client (triggers) and the connection test."""
    import asyncio

    from airflow_provider_workflowsoft.api.errors import WorkflowsoftAuthError

    wrong = "wrong-SECRET-token-123"
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_PROD", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "password": wrong, "extra": {"max_retries": 0}}))
    hook = WorkflowsoftHook("workflowsoft_prod")
    with pytest.raises(WorkflowsoftAuthError) as sync_error:
        hook.list_process_diagrams()

    async def poll() -> None:
        client = await hook.get_async_client()
        try:
            await client.poll_new_integration(11)
        finally:
            await client.aclose()

    with pytest.raises(WorkflowsoftAuthError) as async_error:
        asyncio.run(poll())
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_ADMIN", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "login": ADMIN_LOGIN, "password": wrong}))
    with pytest.raises(WorkflowsoftAuthError, match="administrator login or password was refused") as admin_error:
        WorkflowsoftHook("workflowsoft_admin").list_process_diagrams()
    ok, tested = WorkflowsoftHook("workflowsoft_prod").test_connection()
    for message, conn_id in ((str(sync_error.value), "workflowsoft_prod"),
                             (str(async_error.value), "workflowsoft_prod"),
                             (str(admin_error.value), "workflowsoft_admin"), (tested, "workflowsoft_prod")):
        assert f"connection {conn_id!r}" in message, message
        assert wrong not in message
    assert ok is False


def test_test_connection_bad_admin_password(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, login=ADMIN_LOGIN, password=ADMIN_PASSWORD)
    rm.get(BASE + "/api/v2/app/apitoken", status_code=401, text="Unauthorized")
    ok, message = WorkflowsoftHook().test_connection()
    assert ok is False and "HTTP 401" in message
    assert ADMIN_PASSWORD not in message


def test_test_connection_unreachable(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, host="http://nowhere.invalid:9", password=TOKEN)
    rm.get("http://nowhere.invalid:9/api/v2/workflows",
           exc=requests.exceptions.ConnectionError("Connection refused"))
    ok, message = WorkflowsoftHook().test_connection()
    assert (ok, message) == (False, "Could not reach http://nowhere.invalid:9: Connection refused")
    assert rm.call_count == 1  # no retries behind a test button


def test_given_token_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    set_json(monkeypatch, password=TOKEN)
    with mock.patch("airflow_provider_workflowsoft.hooks.workflowsoft.mask_secret") as masked:
        _ = WorkflowsoftHook().client
    masked.assert_any_call(TOKEN)


def test_minted_token_masked_and_not_logged(monkeypatch: pytest.MonkeyPatch, rm: Any, caplog: Any) -> None:
    caplog.set_level("DEBUG")
    set_json(monkeypatch, login=ADMIN_LOGIN, password=ADMIN_PASSWORD)
    rm.get(BASE + "/api/v2/app/apitoken", json={"token": MINTED})
    rm.get(BASE + "/api/v2/workflows", [{"status_code": 502}, {"json": []}])
    hook = WorkflowsoftHook(client_kwargs={"sleep": SleepRecorder(), "token_cache": protocol.TokenCache()})
    with mock.patch("airflow_provider_workflowsoft.hooks.workflowsoft.mask_secret") as masked:
        assert hook.list_process_diagrams() == []
    masked.assert_any_call(ADMIN_PASSWORD)
    masked.assert_any_call(MINTED)
    assert rm.request_history[-1].headers["Authorization"] == f"Bearer {MINTED}"
    assert MINTED not in caplog.text and ADMIN_PASSWORD not in caplog.text
    assert MINTED not in repr(hook) and ADMIN_PASSWORD not in repr(hook) and ADMIN_PASSWORD not in repr(hook.config)


def test_one_session_per_hook(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, password=TOKEN)
    rm.get(BASE + "/api/v2/workflows", json=[])
    hook = WorkflowsoftHook()
    hook.list_process_diagrams()
    session = hook.client.session
    hook.list_process_diagrams()
    assert hook.client.session is session and hook.get_conn() is hook.client


def test_hook_delegates_calls(monkeypatch: pytest.MonkeyPatch, rm: Any) -> None:
    set_json(monkeypatch, password=TOKEN)
    rm.get(BASE + "/api/users/search", json=[{"Id": 4, "FullName": "Ann", "Email": "a@x.com"}])
    rm.post(BASE + "/api/v2/workflows/start", json={"Id": 8, "Title": "Run"})
    hook = WorkflowsoftHook()
    assert hook.search_users("ann", limit=5)[0]["Id"] == 4
    assert rm.request_history[0].qs["limit"] == ["5"]
    assert hook.resolve_user_id("a@x.com") == 4
    assert hook.start_process(3, on_behalf_of=4) == {"Id": 8, "Title": "Run"}
    assert rm.request_history[-1].headers["X-OnBehalfOf-Id"] == "4"


def test_hook_methods_are_explicit_with_the_clients_signatures() -> None:
    """Every call of the API is a method of the hook class itself (seen by mypy, IDEs and autodoc, not
    forwarded through ``__getattr__``), taking exactly the client's parameters."""
    import inspect

    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient

    calls = ["list_process_diagrams", "list_integration_steps", "find_process_diagram", "find_integration_step",
             "poll_new_integration", "get_fields", "get_field_values", "update_fields", "complete_step",
             "update_and_complete", "search_users", "find_user", "resolve_user_id", "resolve_on_behalf_of",
             "start_process", "create_task"]
    assert "__getattr__" not in vars(WorkflowsoftHook)
    for name in calls:
        assert name in vars(WorkflowsoftHook), name
        hook_params = inspect.signature(vars(WorkflowsoftHook)[name]).parameters
        client_params = inspect.signature(getattr(WorkflowsoftClient, name)).parameters
        assert [(p.name, p.kind, p.default) for p in hook_params.values()] == \
            [(p.name, p.kind, p.default) for p in client_params.values()], name
    with pytest.raises(AttributeError):
        WorkflowsoftHook().no_such_call  # noqa: B018


def test_provider_info() -> None:
    info = get_provider_info()
    dist = distribution("airflow-provider-workflowsoft")
    assert info["package-name"] == dist.metadata["Name"]
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "workflowsoft"
    assert conn_type["hook-name"] == "Workflowsoft"
    assert conn_type["hook-class-name"] == "airflow_provider_workflowsoft.hooks.workflowsoft.WorkflowsoftHook"
    assert set(conn_type["conn-fields"]) == set(EXTRA_FIELDS)
    assert {"timeout", "max_retries", "on_behalf_of", "verify_ssl"} < set(EXTRA_FIELDS)
    assert any("lifetime" in name for name in EXTRA_FIELDS)
    for field in conn_type["conn-fields"].values():
        assert "null" in field["schema"]["type"] and field["label"]
    behaviour = conn_type["ui-field-behaviour"]
    assert {"hidden-fields", "relabeling", "placeholders"} <= set(behaviour)
    assert behaviour["placeholders"]["host"] == "https://api.workflowsoft.com"


def test_entry_point_resolves() -> None:
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith(
        "airflow_provider_workflowsoft")]
    assert entry.load()() == get_provider_info()


def test_hook_connection_form_of_airflow_2() -> None:
    """Airflow 2.11 builds the connection form from the hook (3.2+ from the provider info): the behaviour
    passes Airflow's own schema and every extra is a widget; on 2.11 the providers manager loads both."""
    import jsonschema

    schema = json.loads(
        resources.files("airflow").joinpath("customized_form_field_behaviours.schema.json").read_text()
    )
    behaviour = WorkflowsoftHook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, schema)
    assert behaviour["hidden_fields"] == ["schema", "extra"]
    assert behaviour["relabeling"]["password"] == "API token"
    if AIRFLOW_V_3_0_PLUS:  # Airflow 3 ships no Flask AppBuilder (unless the FAB provider is installed)
        pytest.importorskip("flask_appbuilder", reason="the WTForms widgets are Airflow 2's connection form")
    assert set(WorkflowsoftHook.get_connection_form_widgets()) == set(EXTRA_FIELDS)
    if not AIRFLOW_V_3_0_PLUS:
        from airflow.providers_manager import ProvidersManager

        manager = ProvidersManager()
        assert {f"extra__workflowsoft__{name}" for name in EXTRA_FIELDS} <= set(manager.connection_form_widgets)
        assert manager.field_behaviours["workflowsoft"]["hidden_fields"] == ["schema", "extra"]


def test_a_started_process_id_is_the_process_instance_id_its_steps_are_polled_with(emu: Any) -> None:
    """The README's link (docs/assumptions.md): ``start_process``'s ``Id`` (the start operator's XCom) is the
    ``ProcessInstanceId`` of the integration instances that process creates, as later polls return them."""
    hook = WorkflowsoftHook()
    diagram = hook.find_process_diagram("Customer follow-up")["Id"]
    started = hook.start_process(diagram, on_behalf_of="john.doe@example.com")
    polled = hook.poll_new_integration(hook.find_integration_step(diagram, "Notify CRM")["Id"])
    assert polled is not None and polled["ProcessInstanceId"] == started["Id"]
