"""Which integration step (``StepRef``): one check of "a step id, or both names", one resolution for both clients."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError, WorkflowsoftLookupError
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.emulator import EmulatorServer


@pytest.mark.parametrize("given", [(None, None, None), ("", "Event registration", None), (" ", None, "Enrich event")])
def test_neither_an_id_nor_both_names_is_refused_naming_the_arguments(given: tuple[object, ...]) -> None:
    with pytest.raises(WorkflowsoftInputError) as caught:
        StepRef(*given)
    message = str(caught.value)
    assert "integration_step_id, or process_diagram_name and integration_step_name" in message
    assert f"integration_step_id={given[0]!r}" in message and f"integration_step_name={given[2]!r}" in message


def test_a_given_id_is_the_api_rule_for_ids() -> None:
    assert StepRef(" 11 ").step_id() == 11
    assert StepRef(None, "Event registration", "Enrich event").step_id() is None
    for bad in ("eleven", True, {"IntegrationInstanceId": 5}):
        with pytest.raises(WorkflowsoftInputError, match="integration_step_id must be an integer id"):
            StepRef(bad).step_id()


def test_both_clients_resolve_names_to_the_same_id(emulator: EmulatorServer) -> None:
    config = ClientConfig(base_url=emulator.base_url, api_token="demo-token", max_retries=0)
    named = StepRef(process_diagram_name="event REGISTRATION", integration_step_name="enrich event")
    with WorkflowsoftClient(config) as client:
        step_id = named.resolve(client)
        with pytest.raises(WorkflowsoftLookupError, match="Enrich"):
            StepRef(process_diagram_name="Event registration", integration_step_name="Enrich").resolve(client)
        assert StepRef(step_id).resolve(client) == step_id

    async def resolve_async() -> int:
        async with AsyncWorkflowsoftClient(config) as client:
            return await named.resolve_async(client)

    assert asyncio.run(resolve_async()) == step_id
    assert named.describe() == "'enrich event' of 'event REGISTRATION'" and StepRef(7).describe() == "7"
