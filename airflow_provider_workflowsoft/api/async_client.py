"""An asynchronous Workflowsoft API client on ``httpx``, for triggers; no Airflow in it.

It follows the rules of the synchronous :class:`~airflow_provider_workflowsoft.api.client.WorkflowsoftClient`
exactly, because both read them from :mod:`~airflow_provider_workflowsoft.api.protocol`: the requests are
built by the ``call_*`` functions, answers decoded by ``decode_json``/``normalise_poll``, retries decided
by :class:`~airflow_provider_workflowsoft.api.protocol.RetryPolicy`, minted tokens shared through
:data:`~airflow_provider_workflowsoft.api.protocol.TOKEN_CACHE` (one token per lifetime per process, sync
and async clients alike) and renewed once after a 401.

.. code-block:: python

    async with AsyncWorkflowsoftClient(ClientConfig(base_url=url, api_token=token)) as client:
        instance = await client.poll_new_integration(11)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.client_core import ClientCore
from airflow_provider_workflowsoft.api.config import ClientConfig
from airflow_provider_workflowsoft.api.errors import WorkflowsoftLookupError
from airflow_provider_workflowsoft.api.fields import Field, field_values, parse_fields
from airflow_provider_workflowsoft.api.limiter import RateLimiter
from airflow_provider_workflowsoft.defaults import DEFAULT_ON_BEHALF_OF

log = logging.getLogger(__name__)


def classify_httpx_failure(exc: httpx.HTTPError) -> str:
    """Classify a failed request: surely not sent to the server (``NOT_SENT``), or maybe sent (``MAYBE_SENT``)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol):
        return protocol.NOT_SENT
    return protocol.MAYBE_SENT


def _short_reason(exc: BaseException) -> str:
    names = {
        httpx.ConnectError: "Connection refused",
        httpx.ConnectTimeout: "Connect timed out",
        httpx.ReadTimeout: "Read timed out",
        httpx.WriteTimeout: "Write timed out",
        httpx.PoolTimeout: "Pool timed out",
        httpx.RemoteProtocolError: "Remote end closed connection",
        httpx.ReadError: "Connection reset",
    }
    for cls, text in names.items():
        if isinstance(exc, cls):
            return text
    return type(exc).__name__


class AsyncWorkflowsoftClient(ClientCore):
    """The asynchronous client (one ``httpx.AsyncClient``; use it from one event loop).

    :param config: connection settings (see :class:`~airflow_provider_workflowsoft.api.client.ClientConfig`)
    :param transport: an ``httpx`` async transport to use instead of the network (tests pass
        ``httpx.MockTransport``)
    :param sleep: awaited with seconds to wait between retries (tests inject a recorder)
    :param on_token: called with every token as soon as it is known (the trigger masks it there)
    :param token_cache: where minted tokens are kept (the process-wide cache by default)
    :param on_request: told about every HTTP request once answered or failed (see
        :class:`~airflow_provider_workflowsoft.api.client_core.ClientCore`)
    :param limiter: the client's pace (default: its own, see
        :class:`~airflow_provider_workflowsoft.api.client_core.ClientCore`)
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_token: Callable[[str], None] | None = None,
        token_cache: protocol.TokenCache | None = None,
        rand: Callable[[], float] = random.random,
        on_request: protocol.RequestObserver | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(config, on_token=on_token, token_cache=token_cache, rand=rand, on_request=on_request,
                         limiter=limiter)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._mint_lock: asyncio.Lock | None = None
        self._sleep = sleep
        self._user_ids: dict[str, int | str] = {}

    # -- transport ----------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(self.config.timeout, connect=self.config.connect_timeout)
            limits = httpx.Limits(max_connections=max(1, self.config.pool_size))
            kwargs: dict[str, Any] = {
                "base_url": self.config.base_url,
                "timeout": timeout,
                "limits": limits,
                "headers": {"User-Agent": protocol.USER_AGENT},
                "verify": self.config.verify_ssl,
                "follow_redirects": False,
            }
            if self._transport is not None:
                kwargs["transport"] = self._transport
            self._client = httpx.AsyncClient(**kwargs)
        return self._client

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> AsyncWorkflowsoftClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send_once(self, call: protocol.Call, auth_header: dict[str, str]) -> protocol.Answer:
        headers = call.headers()
        headers.update(auth_header)
        self.request_count += 1
        response = await self.http.request(
            call.method, call.path, params=call.params or None, content=call.content(), headers=headers
        )
        return protocol.Answer(response.status_code, response.text, response.headers.get("Content-Type", ""),
                       response.headers)

    async def _exchange(
        self, call: protocol.Call, auth: Callable[[], Awaitable[dict[str, str]]], *, refresh_on_401: bool
    ) -> protocol.Answer:
        """Send ``call`` with retries; return the first answer not to retry (the sync client's loop)."""
        attempts = self._attempts(call, refresh_on_401=refresh_on_401)
        while True:
            while (wait := attempts.pace()) > 0:  # the client's pace, shared by all its threads
                await self._sleep(wait)
            attempts.next()
            try:
                answer = await self._send_once(call, await auth())
            except httpx.HTTPError as exc:
                await self._sleep(attempts.failed(classify_httpx_failure(exc), _short_reason(exc)))
                continue
            verdict = attempts.answered(answer)
            if verdict == protocol.DONE:
                return answer
            if verdict == protocol.REFRESH_TOKEN:
                self._discard_token()
                continue
            await self._sleep(float(verdict))

    async def request(self, call: protocol.Call) -> Any:
        """Send an authenticated call; return its decoded JSON (``None`` for an empty body)."""
        answer = await self._exchange(call, self._auth_header, refresh_on_401=True)
        return protocol.decode_answer(call, answer, self._redact, self.config.label)

    # -- token --------------------------------------------------------------------------------------

    async def _auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def token(self) -> str:
        """Return the bearer token: the configured one, or a minted one from the cache (minting when needed)."""
        token = self._cached_token()
        if token:
            return token
        if self._mint_lock is None:
            self._mint_lock = asyncio.Lock()
        async with self._mint_lock:
            token = self._cached_token()
            if token:
                return token
            call, auth, minted_at = self._mint_call()

            async def basic() -> dict[str, str]:
                return auth

            answer = await self._exchange(call, basic, refresh_on_401=False)
            return self._minted(call, answer, minted_at)

    # -- calls --------------------------------------------------------------------------------------

    async def poll_new_integration(self, integration_step_id: int | str | None = None, *,
                                   integration_diagram_id: int | str | None = None) -> dict[str, Any] | None:
        """Return the next new integration instance of a step, or ``None`` when there is none."""
        step = protocol.renamed_argument(integration_step_id, integration_diagram_id, new="integration_step_id",
                                         old="integration_diagram_id", owner="poll_new_integration")
        data = await self.request(protocol.call_poll_new_integration(step))
        return protocol.normalise_poll(data)

    async def _process_diagrams(self, search_term: str | None) -> list[dict[str, Any]]:
        call = protocol.call_list_process_diagrams(search_term, 100)
        items = protocol.unwrap_list(await self.request(call), "process diagrams", call.method, call.path)
        return [protocol.normalise_object(item, call.method, call.path) for item in items]

    async def find_integration_step_id(self, process_diagram_name: str, integration_step_name: str) -> int:
        """Return the id of an integration step, looked up by its title and its process diagram's title.

        ``integration_step_name`` in the process diagram ``process_diagram_name``: case-insensitive, one match each (the
        sync client's rule).
        """
        found = await self._process_diagrams(process_diagram_name)
        where = "among the diagrams matching the search"
        if not protocol.has_title(found, process_diagram_name):
            found, where = await self._process_diagrams(None), protocol.ALL_DIAGRAMS
        diagram = protocol.one_by_title(found, process_diagram_name, "process diagram", where)
        call = protocol.call_list_integration_steps(diagram["Id"])
        items = protocol.unwrap_list(await self.request(call), "integration steps", call.method, call.path)
        steps = [protocol.normalise_object(item, call.method, call.path) for item in items]
        step = protocol.one_by_title(steps, integration_step_name, "integration step",
                                     f"in process diagram {diagram['Id']}")
        return int(step["Id"])

    async def get_fields(self, integration_instance_id: Any) -> list[Field]:
        """Return the fields of an integration instance, values parsed by type."""
        data = await self.request(protocol.call_get_fields(integration_instance_id))
        return parse_fields(data, instance_id=integration_instance_id)

    async def get_field_values(self, integration_instance_id: Any) -> dict[str, Any]:
        """``{label: value}`` of an integration instance."""
        return field_values(await self.get_fields(integration_instance_id))

    async def search_users(self, query: str, limit: int = 15) -> list[dict[str, Any]]:
        """Users whose name or email matches ``query`` (``Id``, ``FullName``, ``Email``)."""
        call = protocol.call_search_users(str(query), limit)
        items = protocol.unwrap_list(await self.request(call), "users", call.method, call.path)
        return [protocol.normalise_object(item, call.method, call.path) for item in items]

    async def resolve_user_id(self, user: Any) -> int | str:
        """Return the user id of an id (as is), an email or a full name (looked up once per client)."""
        known = self._known_user_id(user)
        if known is not None:
            return known
        text = str(user).strip()
        if not text:
            raise WorkflowsoftLookupError("Cannot look up a user: the query is empty")
        if text.casefold() not in self._user_ids:
            self._user_ids[text.casefold()] = self._one_user(text, await self.search_users(text, limit=50))["Id"]
        return self._user_ids[text.casefold()]

    async def resolve_on_behalf_of(self, on_behalf_of: Any = None, *, needs_user: str | None = None) -> str:
        """Return the ``X-OnBehalfOf-Id`` header of a request (the sync client's rule)."""
        value = self._on_behalf_of_user(on_behalf_of, needs_user)
        return DEFAULT_ON_BEHALF_OF if value == DEFAULT_ON_BEHALF_OF else str(await self.resolve_user_id(value))

    async def task_people(
        self, assignee: Any = None, on_behalf_of: Any = None, *, alert: bool = False
    ) -> tuple[int | str, str]:
        """Return ``(assignee id, creator id)`` of a task (the sync client's rule), before anything is sent."""
        creator = await self.resolve_on_behalf_of(self._task_creator(assignee, on_behalf_of, alert=alert),
                                                  needs_user="Creating a task")
        return (creator if protocol.blank(assignee) else await self.resolve_user_id(assignee)), creator

    async def create_task(
        self,
        title: str,
        assigned_user_id: int | str | None = None,
        description: str | None = None,
        files: list[Any] | None = None,
        on_behalf_of: str | int | None = None,
    ) -> dict[str, Any]:
        """Create a task; return the task object (``Id``, ``Title``, ``Description``); the sync client's rules."""
        user = await self.resolve_on_behalf_of(on_behalf_of, needs_user="Creating a task")
        assignee = None if protocol.blank(assigned_user_id) else await self.resolve_user_id(assigned_user_id)
        call = protocol.call_create_task(title, assignee, description, files, user)
        return protocol.normalise_object(await self.request(call), call.method, call.path)


__all__ = ["AsyncWorkflowsoftClient", "classify_httpx_failure"]
