"""The clients' request observer (``on_request``): one event per HTTP request sent, retries and token requests
included, the same from the sync and the async client (both get it from ``protocol.Attempts``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import requests_mock as requests_mock_module

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftConnectionError

from ..conftest import ADMIN_LOGIN, ADMIN_PASSWORD, BASE, FIELDS_PATH, TOKEN, page_fields

POLL_PATH = "/api/v2/workflows/instances/new-integrations"


def seen(events: list[protocol.RequestEvent]) -> list[tuple[str, str, int | None, int]]:
    return [(e.method, e.kind, e.status, e.attempt) for e in events]


def test_every_request_is_observed_with_kind_status_and_attempt(
    rm: requests_mock_module.Mocker, make_client: Callable[..., WorkflowsoftClient]
) -> None:
    events: list[protocol.RequestEvent] = []
    rm.get(BASE + POLL_PATH, [{"status_code": 429, "headers": {"Retry-After": "0"}, "json": {"Message": "slow"}},
                              {"status_code": 200, "json": {"IntegrationInstanceId": 5001, "ProcessInstanceId": 9}}])
    rm.get(BASE + FIELDS_PATH, json=page_fields())
    client = make_client(on_request=events.append)

    client.poll_new_integration(11)
    client.get_fields(42)

    assert seen(events) == [("GET", "poll", 429, 1), ("GET", "poll", 200, 2), ("GET", "get_fields", 200, 1)]
    assert all(e.seconds >= 0 for e in events)
    # No id, token or path in what observers see: names built from it stay bounded and safe (the measured times are
    # zeroed first: a duration such as 0.0050013 s would spell an id by chance).
    shown = [repr(dataclasses.replace(e, seconds=0.0, waited=0.0, rate=None)) for e in events]
    assert all("5001" not in r and TOKEN not in r for r in shown) and all("42" not in e.kind for e in events)


def test_transport_failures_and_token_requests_are_observed(
    rm: requests_mock_module.Mocker, make_client: Callable[..., WorkflowsoftClient]
) -> None:
    events: list[protocol.RequestEvent] = []
    rm.get(BASE + protocol.TOKEN_PATH, json={"Token": "minted-token-1234567890"})
    rm.get(BASE + POLL_PATH, [{"exc": requests.exceptions.ConnectionError("Connection reset")},
                              {"status_code": 204}])
    client = make_client(login=ADMIN_LOGIN, password=ADMIN_PASSWORD, on_request=events.append)

    assert client.poll_new_integration(11) is None

    assert seen(events) == [("GET", "mint_token", 200, 1), ("GET", "poll", None, 1), ("GET", "poll", 204, 2)]


def test_a_failing_observer_never_breaks_a_request(
    rm: requests_mock_module.Mocker, make_client: Callable[..., WorkflowsoftClient]
) -> None:
    def broken(_event: protocol.RequestEvent) -> None:
        raise RuntimeError("metrics backend down")

    rm.get(BASE + FIELDS_PATH, json=page_fields())
    assert make_client(on_request=broken).get_fields(42)


def test_the_final_failure_is_observed_before_the_error(
    rm: requests_mock_module.Mocker, make_client: Callable[..., WorkflowsoftClient]
) -> None:
    events: list[protocol.RequestEvent] = []
    rm.get(BASE + FIELDS_PATH, exc=requests.exceptions.ConnectionError("Connection refused"))
    with pytest.raises(WorkflowsoftConnectionError):
        make_client(max_retries=1, on_request=events.append).get_fields(42)
    assert seen(events) == [("GET", "get_fields", None, 1), ("GET", "get_fields", None, 2)]


def test_the_async_client_reports_the_same_events() -> None:
    events: list[protocol.RequestEvent] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={"Message": "slow"}),
                    httpx.Response(200, json={"IntegrationInstanceId": 5001, "ProcessInstanceId": 9}),
                    httpx.Response(200, json=page_fields())])

    def handler(_request: httpx.Request) -> httpx.Response:
        return next(answers)

    async def no_sleep(_seconds: float) -> Any:
        return None

    async def go() -> None:
        async with AsyncWorkflowsoftClient(
            ClientConfig(base_url=BASE, api_token=TOKEN), transport=httpx.MockTransport(handler), sleep=no_sleep,
            token_cache=protocol.TokenCache(), on_request=events.append,
        ) as client:
            await client.poll_new_integration(11)
            await client.get_fields(42)

    asyncio.run(go())
    assert seen(events) == [("GET", "poll", 429, 1), ("GET", "poll", 200, 2), ("GET", "get_fields", 200, 1)]


def test_every_call_builder_names_its_endpoint_kind() -> None:
    calls = [
        protocol.call_list_process_diagrams("x", 1), protocol.call_list_integration_steps(1),
        protocol.call_poll_new_integration(11), protocol.call_get_fields(42),
        protocol.call_update_fields(42, {}, "system"), protocol.call_complete_step(42, "system"),
        protocol.call_search_users("jane", 5), protocol.call_start_process(1, {}, "system"),
        protocol.call_create_task("t", None, None, None, "system"), protocol.call_mint_token(60),
    ]
    kinds = [c.kind for c in calls]
    assert "other" not in kinds and len(set(kinds)) == len(kinds), kinds
