"""A plain, synchronous Workflowsoft API client on ``requests``; no Airflow in it.

One :class:`WorkflowsoftClient` holds one pooled ``requests.Session``, gets its token once per lifetime
(per process, see :data:`~.protocol.TOKEN_CACHE`), renews it once after a 401, retries transient
failures by :class:`~.protocol.RetryPolicy`, and never lets the token reach a log line or an error.
:class:`~airflow_provider_workflowsoft.hooks.workflowsoft.WorkflowsoftHook` builds it from an Airflow
connection; scripts can build it from :class:`ClientConfig` directly.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.client_core import ClientCore
from airflow_provider_workflowsoft.api.config import ClientConfig
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftAPIError,
    WorkflowsoftError,
    WorkflowsoftLookupError,
    status_error,
)
from airflow_provider_workflowsoft.api.fields import (
    Field,
    empty_required,
    field_values,
    parse_fields,
    prepare_update,
    required_error,
    to_jsonable,
)
from airflow_provider_workflowsoft.api.limiter import RateLimiter
from airflow_provider_workflowsoft.defaults import DEFAULT_ON_BEHALF_OF

log = logging.getLogger(__name__)


def classify_requests_failure(exc: requests.RequestException) -> str:
    """Classify a failed request: surely not sent to the server (``NOT_SENT``), or maybe sent (``MAYBE_SENT``)."""
    if isinstance(exc, requests.ConnectTimeout):
        return protocol.NOT_SENT
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return protocol.NOT_SENT
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc)
        if any(
            marker in text
            for marker in ("NewConnectionError", "Connection refused", "Name or service not known",
                           "nodename nor servname", "Failed to resolve", "getaddrinfo failed")
        ):
            return protocol.NOT_SENT
    return protocol.MAYBE_SENT


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Read timed out", "timed out", "Remote end closed connection",
                   "Connection aborted", "Connection reset", "Failed to resolve", "Name or service not known"):
        if marker in text:
            return marker
    return type(exc).__name__


class WorkflowsoftClient(ClientCore):
    """The synchronous client. Thread-safe: the batch operator shares one across its workers.

    :param config: connection settings
    :param session: a ``requests.Session`` to use instead of a new pooled one
    :param sleep: called with seconds to wait between retries (tests inject a recorder)
    :param on_token: called with every token as soon as it is known (the hook masks it there)
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
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_token: Callable[[str], None] | None = None,
        token_cache: protocol.TokenCache | None = None,
        rand: Callable[[], float] = random.random,
        on_request: protocol.RequestObserver | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(config, on_token=on_token, token_cache=token_cache, rand=rand, on_request=on_request,
                         limiter=limiter)
        self._session = session
        self._session_lock = threading.Lock()
        self._mint_lock = threading.Lock()
        self._sleep = sleep
        self._user_ids: dict[str, int | str] = {}
        self._users_lock = threading.Lock()

    # -- transport ----------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    # urllib3 must not retry on its own: the retry policy here decides, per call.
                    adapter = HTTPAdapter(
                        pool_connections=1, pool_maxsize=max(1, self.config.pool_size), max_retries=0
                    )
                    session.mount("https://", adapter)
                    session.mount("http://", adapter)
                    session.headers["User-Agent"] = protocol.USER_AGENT
                    session.verify = self.config.verify_ssl
                    # With trust_env, requests scans the whole environment for proxy settings on every
                    # request (a quarter of the client's CPU); read them once here instead.
                    session.trust_env = False
                    session.proxies.update(requests.utils.get_environ_proxies(self.config.base_url))
                    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                    if self.config.verify_ssl and ca_bundle:
                        session.verify = ca_bundle
                    self._session = session
        return self._session

    def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> WorkflowsoftClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_once(self, call: protocol.Call, auth_header: dict[str, str]) -> protocol.Answer:
        headers = call.headers()
        headers.update(auth_header)
        self.request_count += 1
        response = self.session.request(
            call.method,
            self.config.base_url + call.path,
            params=call.params or None,
            data=call.content(),
            headers=headers,
            timeout=(self.config.connect_timeout, self.config.timeout),
        )
        return protocol.Answer(
            response.status_code,
            response.text,
            response.headers.get("Content-Type", ""),
            response.headers,
        )

    def _exchange(
        self, call: protocol.Call, auth: Callable[[], dict[str, str]], *, refresh_on_401: bool
    ) -> protocol.Answer:
        """Send ``call`` with retries; return the first answer not to retry (2xx or error)."""
        attempts = self._attempts(call, refresh_on_401=refresh_on_401)
        while True:
            while (wait := attempts.pace()) > 0:  # the client's pace, shared by all its threads
                self._sleep(wait)
            attempts.next()
            try:
                answer = self._send_once(call, auth())
            except requests.RequestException as exc:
                self._sleep(attempts.failed(classify_requests_failure(exc), _short_reason(exc)))
                continue
            verdict = attempts.answered(answer)
            if verdict == protocol.DONE:
                return answer
            if verdict == protocol.REFRESH_TOKEN:
                self._discard_token()
                continue
            self._sleep(float(verdict))

    def request(self, call: protocol.Call) -> Any:
        """Send an authenticated call; return its decoded JSON (``None`` for an empty body)."""
        answer = self._exchange(call, self._auth_header, refresh_on_401=True)
        return protocol.decode_answer(call, answer, self._redact, self.config.label)

    # -- token --------------------------------------------------------------------------------------

    def _auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        """Return the bearer token: the configured one, or a minted one from the cache (minting when needed)."""
        token = self._cached_token()
        if token:
            return token
        with self._mint_lock:  # one mint for all threads sharing this client
            token = self._cached_token()
            if token:
                return token
            call, auth, minted_at = self._mint_call()
            answer = self._exchange(call, lambda: auth, refresh_on_401=False)
            return self._minted(call, answer, minted_at)

    # -- diagrams -----------------------------------------------------------------------------------

    def list_process_diagrams(self, search_term: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Process diagrams (``Id``, ``Title``), optionally only those matching ``search_term``."""
        call = protocol.call_list_process_diagrams(search_term, limit)
        items = protocol.unwrap_list(self.request(call), "process diagrams", call.method, call.path)
        return [protocol.normalise_object(item, call.method, call.path) for item in items]

    def list_integration_steps(self, process_diagram_id: int | str) -> list[dict[str, Any]]:
        """Integration steps (``Id``, ``Title``) of a process diagram."""
        call = protocol.call_list_integration_steps(process_diagram_id)
        items = protocol.unwrap_list(self.request(call), "integration steps", call.method, call.path)
        return [protocol.normalise_object(item, call.method, call.path) for item in items]

    def find_process_diagram(self, name: str) -> dict[str, Any]:
        """Return the one process diagram titled ``name`` (case-insensitive)."""
        found = self.list_process_diagrams(search_term=name, limit=100)
        if protocol.has_title(found, name):
            return protocol.one_by_title(found, name, "process diagram", "among the diagrams matching the search")
        return protocol.one_by_title(self.list_process_diagrams(limit=100), name, "process diagram",
                                     protocol.ALL_DIAGRAMS)

    def find_integration_step(self, process_diagram_id: int | str, name: str) -> dict[str, Any]:
        """Return the one integration step titled ``name`` (case-insensitive) in a process diagram."""
        found = self.list_integration_steps(process_diagram_id)
        return protocol.one_by_title(found, name, "integration step", f"in process diagram {process_diagram_id}")

    # -- integration instances ----------------------------------------------------------------------

    def poll_new_integration(self, integration_step_id: int | str | None = None, *,
                             integration_diagram_id: int | str | None = None) -> dict[str, Any] | None:
        """Return the next new integration instance of a step, or ``None`` when there is none."""
        step = protocol.renamed_argument(integration_step_id, integration_diagram_id, new="integration_step_id",
                                         old="integration_diagram_id", owner="poll_new_integration")
        return protocol.normalise_poll(self.request(protocol.call_poll_new_integration(step)))

    def get_fields(self, integration_instance_id: Any) -> list[Field]:
        """Return the fields of an integration instance, values parsed by type."""
        call = protocol.call_get_fields(integration_instance_id)
        return parse_fields(self.request(call), instance_id=integration_instance_id)

    def get_field_values(self, integration_instance_id: Any) -> dict[str, Any]:
        """``{label: value}`` of an integration instance."""
        return field_values(self.get_fields(integration_instance_id))

    def update_fields(
        self,
        integration_instance_id: Any,
        values: Mapping[str, Any],
        *,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
    ) -> dict[str, Any]:
        """Write ``values`` (label, key or ``field_<key>`` -> value) after validating all of them.

        :param fields: the instance's fields when already fetched (saves one request)
        :return: ``{label: value written}``, JSON-safe
        """
        if fields is None:
            fields = self.get_fields(integration_instance_id)
        wire = prepare_update(fields, values, instance_id=integration_instance_id)
        if wire:
            self.request(protocol.call_update_fields(
                integration_instance_id, wire, self.resolve_on_behalf_of(on_behalf_of)
            ))
        return _written(fields, wire)

    def complete_step(
        self,
        integration_instance_id: Any,
        *,
        validate: bool = True,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
        already_completed_ok: bool = False,
    ) -> dict[str, Any]:
        """Complete an integration instance.

        :param validate: first read the fields (unless given) and refuse, without sending, when a
            required field is empty
        :param already_completed_ok: treat an "already completed" answer as success (set by callers that
            know this package completed it before, such as a retry)
        :return: ``{"IntegrationInstanceId": id, "completed": True, "already_completed": bool}``
        """
        if validate:
            if fields is None:
                fields = self.get_fields(integration_instance_id)
            missing = empty_required(fields)
            if missing:
                raise required_error(integration_instance_id, missing)
        return self._complete(integration_instance_id, self.resolve_on_behalf_of(on_behalf_of), already_completed_ok)

    def update_and_complete(
        self,
        integration_instance_id: Any,
        values: Mapping[str, Any] | None,
        *,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
        already_completed_ok: bool = False,
    ) -> dict[str, Any]:
        """Run the completion sequence, the one every caller uses (operators, batch worker).

        Validate everything first (values, then required fields after them), then write, then complete.
        Nothing is sent when anything is wrong, so an instance is never left half-written. With
        ``already_completed_ok`` (the caller knows an earlier attempt of its own may have completed the
        instance), a write or a completion refused as "already completed" is that attempt's success: the
        result says ``already_completed: True`` and nothing more is sent.
        """
        if fields is None:
            fields = self.get_fields(integration_instance_id)
        wire = prepare_update(fields, values or {}, instance_id=integration_instance_id)
        missing = empty_required(fields, wire)
        if missing:
            raise required_error(integration_instance_id, missing)
        user = self.resolve_on_behalf_of(on_behalf_of)
        if wire:
            try:
                self.request(protocol.call_update_fields(integration_instance_id, wire, user))
            except WorkflowsoftAPIError as exc:
                if not (already_completed_ok and protocol.looks_already_completed(exc.status, exc.server_message)):
                    raise
                # A completed instance refuses writes: confirm the completion, write nothing.
                log.info("Integration instance %s refused the write as already completed", integration_instance_id)
                result = self._complete(integration_instance_id, user, True)
                result["fields"] = {}
                return result
        result = self._complete(integration_instance_id, user, already_completed_ok)
        result["fields"] = _written(fields, wire)
        return result

    def _complete(self, integration_instance_id: Any, user: str, already_ok: bool) -> dict[str, Any]:
        call = protocol.call_complete_step(integration_instance_id, user)
        answer = self._exchange(call, self._auth_header, refresh_on_401=True)
        instance_id = protocol.coerce_id(integration_instance_id)
        if answer.status < 400:
            return {"IntegrationInstanceId": instance_id, "completed": True, "already_completed": False}
        message = self._redact(protocol.extract_message(answer.text, answer.content_type))
        # After an attempt whose answer was lost, "already completed" means that attempt worked.
        if (already_ok or answer.earlier_attempt_maybe_applied) and protocol.looks_already_completed(
            answer.status, message
        ):
            log.info("Integration instance %s was already completed; counting it as done", instance_id)
            return {"IntegrationInstanceId": instance_id, "completed": True, "already_completed": True}
        raise status_error(answer.status, call.method, call.path, message, self.config.label)

    # -- users, processes, tasks --------------------------------------------------------------------

    def search_users(self, query: str, limit: int = 15) -> list[dict[str, Any]]:
        """Users whose name or email matches ``query`` (``Id``, ``FullName``, ``Email``)."""
        call = protocol.call_search_users(str(query), limit)
        items = protocol.unwrap_list(self.request(call), "users", call.method, call.path)
        return [protocol.normalise_object(item, call.method, call.path) for item in items]

    def find_user(self, query: Any) -> dict[str, Any]:
        """Exactly one user whose id, email or full name equals ``query`` (case-insensitive)."""
        text = str(query).strip()
        if not text:
            raise WorkflowsoftLookupError("Cannot look up a user: the query is empty")
        return self._one_user(text, self.search_users(text, limit=50))

    def start_process(
        self,
        process_diagram_id: int | str,
        fields: Mapping[str, Any] | None = None,
        on_behalf_of: str | int | None = None,
    ) -> dict[str, Any]:
        """Start a process; return the process instance (``Id``, ``Title``).

        Sent again only when the server surely did not act (see :class:`~.protocol.RetryPolicy`).

        ``on_behalf_of`` is the user who starts it (an id, an email or a full name; default: the connection's
        ``on_behalf_of`` when that is a user): refused before sending when it is ``system``.
        """
        user = self.resolve_on_behalf_of(on_behalf_of, needs_user="Starting a process")
        call = protocol.call_start_process(process_diagram_id, fields, user)
        return protocol.normalise_object(self.request(call), call.method, call.path)

    def create_task(
        self,
        title: str,
        assigned_user_id: int | str | None = None,
        description: str | None = None,
        files: list[Any] | None = None,
        on_behalf_of: str | int | None = None,
    ) -> dict[str, Any]:
        """Create a task; return the task object (``Id``, ``Title``, ``Description``).

        ``on_behalf_of`` is the user who creates it, as for :meth:`start_process`.
        """
        user = self.resolve_on_behalf_of(on_behalf_of, needs_user="Creating a task")
        assignee = None if protocol.blank(assigned_user_id) else self.resolve_user_id(assigned_user_id)
        call = protocol.call_create_task(title, assignee, description, files, user)
        return protocol.normalise_object(self.request(call), call.method, call.path)

    def task_people(
        self, assignee: Any = None, on_behalf_of: Any = None, *, alert: bool = False
    ) -> tuple[int | str, str]:
        """Return ``(assignee id, creator id)`` of a task, checked and looked up before anything is sent.

        The creator is ``on_behalf_of``, else the connection's user, else (``alert=True``: a notice for a person)
        the assignee; without one, a task is refused before sending. The assignee defaults to the creator.
        """
        creator = self.resolve_on_behalf_of(self._task_creator(assignee, on_behalf_of, alert=alert),
                                            needs_user="Creating a task")
        return (creator if protocol.blank(assignee) else self.resolve_user_id(assignee)), creator

    def resolve_user_id(self, user: Any) -> int | str:
        """Return the user id of an id (an int or numeric string, as is), an email or a full name.

        An email or a name is looked up once per client.
        """
        known = self._known_user_id(user)
        if known is not None:
            return known
        text = str(user).strip()
        with self._users_lock:
            if text.casefold() not in self._user_ids:
                self._user_ids[text.casefold()] = self.find_user(text)["Id"]
            return self._user_ids[text.casefold()]

    def resolve_on_behalf_of(self, on_behalf_of: Any = None, *, needs_user: str | None = None) -> str:
        """Return the ``X-OnBehalfOf-Id`` header of a request: one meaning everywhere.

        Empty means the connection's default; ``system`` is sent as it is; an id is sent as it is; an
        email or a full name is looked up (once per client) and sent as that user's id.

        :param needs_user: what the header is for, when it must be a user (starts and tasks: the API page
            sends a user's ``Id`` there, and Workflowsoft refuses ``system``): ``system``, given or the
            connection's default, is then refused before anything is sent, with what to pass instead
        """
        value = self._on_behalf_of_user(on_behalf_of, needs_user)
        return DEFAULT_ON_BEHALF_OF if value == DEFAULT_ON_BEHALF_OF else str(self.resolve_user_id(value))

    # -- health -------------------------------------------------------------------------------------

    def check(self) -> str:
        """One cheap authenticated call; returns a short description of what was reached."""
        diagrams = self.list_process_diagrams(limit=1)
        return f"Connected to {self.config.base_url} ({'a' if diagrams else 'no'} process diagram visible)"


def _written(fields: list[Field], wire: dict[str, Any]) -> dict[str, Any]:
    by_param = {f.param_key: f for f in fields}
    return {by_param[k].label or by_param[k].key: to_jsonable(v) for k, v in wire.items()}


__all__ = [
    "ClientConfig",
    "WorkflowsoftAPIError",
    "WorkflowsoftClient",
    "WorkflowsoftError",
]
