"""The async client against the emulator over loopback: one token, the shared retry policy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
from airflow_provider_workflowsoft.api.client import ClientConfig
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftTransientError,
)

# -- async client -------------------------------------------------------------------------------------


def test_async_client_mints_once_and_refreshes_after_401(emu) -> None:
    from airflow_provider_workflowsoft.api.protocol import TokenCache

    login, password = emu.admin_credentials
    cache = TokenCache()
    seen: list[str] = []
    config = ClientConfig(base_url=emu.base_url, login=login, password=password, max_retries=0)

    async def go() -> None:
        async with AsyncWorkflowsoftClient(config, token_cache=cache, on_token=seen.append) as client:
            emu.create_instances(11)
            assert (await client.poll_new_integration(11))["IntegrationInstanceId"] == 5001
            assert (await client.get_field_values(5001))["Event name"] == "Event Test"
            emu.expire_tokens()
            assert await client.poll_new_integration(11) is None

    asyncio.run(go())
    mints = [r for r in emu.request_log() if r["path"] == "/api/v2/app/apitoken"]
    assert len(mints) == 2 and len(seen) == 2


def test_async_client_retries_by_the_shared_policy() -> None:
    statuses = iter([429, 503, 200])
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, json={} if status == 200 else {"Message": "slow down"},
                              headers={"Retry-After": "0.25"})

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def go() -> Any:
        client = AsyncWorkflowsoftClient(ClientConfig(base_url="http://x", api_token="tok-123456", max_retries=2),
                                         transport=httpx.MockTransport(handler), sleep=sleep)
        try:
            return await client.poll_new_integration(11)
        finally:
            await client.aclose()

    assert asyncio.run(go()) is None and sleeps == [0.25, 0.25]
    statuses = iter([503, 503])
    with pytest.raises(WorkflowsoftTransientError):
        asyncio.run(asyncio.wait_for(_poll_with(handler, sleep, max_retries=1), 10))


async def _poll_with(handler: Any, sleep: Any, max_retries: int) -> Any:
    client = AsyncWorkflowsoftClient(ClientConfig(base_url="http://x", api_token="tok-123456",
                                                  max_retries=max_retries),
                                     transport=httpx.MockTransport(handler), sleep=sleep)
    try:
        return await client.poll_new_integration(11)
    finally:
        await client.aclose()
