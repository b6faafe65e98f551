"""``WorkflowsoftHook``: turns an Airflow connection of type ``workflowsoft`` into an API client.

The hook is thin. It reads the connection (host, API token or administrator credentials, extras),
builds one :class:`~airflow_provider_workflowsoft.api.client.WorkflowsoftClient` lazily, masks every token
with Airflow's secrets masker as soon as it is known, and hands every call of the API on to it, one
explicit method each.
The HTTP work, retries and token handling live in the client; the field model in
:mod:`airflow_provider_workflowsoft.api.fields`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_workflowsoft import connection_form, defaults
from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.config import ClientConfig
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftAPIError,
    WorkflowsoftConfigError,
    WorkflowsoftConnectionError,
    WorkflowsoftError,
)
from airflow_provider_workflowsoft.deprecation import warn_deprecated
from airflow_provider_workflowsoft.masking import amask_secret, mask_secret, mask_secret_in_process
from airflow_provider_workflowsoft.version_compat import BaseHook

if TYPE_CHECKING:
    from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient
    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
    from airflow_provider_workflowsoft.api.fields import Field


def _cast_extra(name: str, raw: Any, key: str | None = None) -> Any:
    """Return an extra's value in its type; ``None``/empty (as the UI stores untouched fields) means the default.

    :param key: the extra's key as stored, when it differs from ``name`` (an older key), for errors
    """
    spec = connection_form.EXTRA_FIELDS[name]
    if protocol.blank(raw):
        return spec["default"]
    kind = spec["type"]
    try:
        if kind == "integer":
            if isinstance(raw, bool):
                raise ValueError
            value: Any = int(str(raw).strip()) if not isinstance(raw, int) else raw
            if value < 0:
                raise ValueError
            return value
        if kind == "number":
            if isinstance(raw, bool):
                raise ValueError
            value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
            if not value > 0 or value == float("inf"):  # NaN too
                raise ValueError
            return value
        if kind == "boolean":
            return protocol.to_bool(raw, strict=True)
        return str(raw).strip()
    except ValueError:
        expected = {"integer": "a whole number >= 0", "number": "a number > 0", "boolean": "true or false"}
        raise WorkflowsoftConfigError(
            f"The connection's extra {key or name!r} is {raw!r}, which is not {expected.get(kind, kind)}"
        ) from None


def config_from_connection(conn: Any, *, extras: Mapping[str, Any] | None = None, **overrides: Any) -> ClientConfig:
    """Return a :class:`ClientConfig` from an Airflow ``Connection`` (or anything with the same attributes).

    :param extras: the connection's extras when already read (a trigger reads them asynchronously)
    :param overrides: ``ClientConfig`` fields that win over the connection (for example ``pool_size``)
    """
    if extras is None:
        extras = getattr(conn, "extra_dejson", None) or {}
    if not isinstance(extras, Mapping):
        raise WorkflowsoftConfigError("The connection's extra is not a JSON object")
    host = (conn.host or "").strip()
    schema = (getattr(conn, "schema", None) or "").strip().lower()
    if host and "://" not in host and schema in ("http", "https"):
        host = f"{schema}://{host}"
    port = conn.port or None
    try:
        port = int(port) if port else None
    except (TypeError, ValueError):
        raise WorkflowsoftConfigError(f"The connection's port {conn.port!r} is not a number") from None
    login = (conn.login or "").strip() or None
    password = conn.password or None
    keys = {name: name for name in connection_form.EXTRA_FIELDS}
    for old, new in connection_form.LEGACY_EXTRA_NAMES.items():
        # "***" is what Airflow 3.3's form stored for the old key (masked as sensitive): the default.
        if extras.get(new) is None and extras.get(old) not in (None, "***"):
            keys[new] = old
            warn_deprecated(f"The connection's extra {old!r} is deprecated: rename it {new!r} (the same value)")
    values = {name: _cast_extra(name, extras.get(key), key) for name, key in keys.items()}
    credentials: dict[str, Any]
    if login and password:
        credentials = {"login": login, "password": password}
    elif password:
        credentials = {"api_token": password.strip()}
    elif login:
        raise WorkflowsoftConfigError(
            "The connection has a login but no password: put the administrator password in the API token "
            "(password) field, or clear the login and put an API token there"
        )
    else:
        raise WorkflowsoftConfigError(
            f"The connection {getattr(conn, 'conn_id', '')!r} has no API token: put it in the API token "
            "(password) field, or fill the login and that field with administrator credentials"
        )
    kwargs: dict[str, Any] = {
        "base_url": protocol.normalise_base_url(host, port),
        "token_lifetime_seconds": values["lifetime_seconds"],
        "timeout": values["timeout"],
        "max_retries": values["max_retries"],
        "on_behalf_of": values["on_behalf_of"] or defaults.DEFAULT_ON_BEHALF_OF,
        "verify_ssl": values["verify_ssl"],
        "max_requests_per_second": values["max_requests_per_second"],
        **credentials,
    }
    conn_id = getattr(conn, "conn_id", None)
    if conn_id:  # authentication errors say which connection to fix
        kwargs["label"] = f"the Airflow connection {conn_id!r}"
    kwargs.update(overrides)
    return ClientConfig(**kwargs)


def _sync_client(config: ClientConfig, **kwargs: Any) -> WorkflowsoftClient:
    """Return a new :class:`WorkflowsoftClient` of ``config``."""
    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient  # lazy: DAG parsing never loads requests

    return WorkflowsoftClient(config, **kwargs)


def _metrics_kwargs() -> dict[str, Any]:
    """``on_request`` sending every request to Airflow's metrics, when Airflow sends metrics (else nothing)."""
    from airflow_provider_workflowsoft.metrics import recorder  # loaded only when a client is built

    found = recorder()
    return {"on_request": found.request} if found is not None else {}


# -- reading a connection from a trigger's event loop -------------------------------------------------


def supervisor_answers_only_sync() -> bool:
    """Whether this process's supervisor channel answers synchronous requests only.

    ``airflow dags test`` runs a deferred task's trigger in-process with ``InProcessSupervisorComms``, which
    has ``send`` but no ``asend``. The Task SDK's async connection read (``Connection.async_get``, through
    ``ExecutionAPISecretsBackend.aget_connection``) calls ``asend``, swallows the ``AttributeError`` as
    "not found here" and falls through to the environment-variable backend: a connection stored in the
    metadata database then raises ``AirflowNotFoundException``. The real triggerer's channel has ``asend``.
    """
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # Airflow 2: no supervisor channel; connections come from the database directly
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms is not None and not callable(getattr(comms, "asend", None))


async def aget_connection(conn_id: str) -> Any:
    """Return a connection read from a trigger's event loop, the async-safe way on every version.

    In the real triggerer it is the async read (nothing on the event loop waits for the supervisor). Where
    the supervisor channel has no async requests (``airflow dags test``'s in-process trigger run, see
    :func:`supervisor_answers_only_sync`), the synchronous read runs in a worker thread instead, so a
    connection stored in the metadata database is found there too.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # pragma: no cover - older common.compat
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
    if supervisor_answers_only_sync():
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
    return await get_async_connection(conn_id)


async def aconnection_extras(conn: Any) -> Any:
    """Return a connection's extras, read without a synchronous supervisor call on the event loop."""
    aextra = getattr(conn, "aextra_dejson", None)
    if aextra is not None:
        return await aextra()
    return conn.extra_dejson


class WorkflowsoftHook(BaseHook):
    """Interact with the Workflowsoft API.

    The connection (type ``workflowsoft``) holds the API address in *Host* (default
    ``https://api.workflowsoft.com``) and either an API token in *Password*, or administrator
    credentials in *Login* and *Password* from which tokens are minted (one per lifetime per process).

    .. code-block:: python

        hook = WorkflowsoftHook()  # workflowsoft_default
        step = hook.find_integration_step(hook.find_process_diagram("Event registration")["Id"], "Enrich event")
        instance = hook.poll_new_integration(step["Id"])
        if instance:
            values = hook.get_field_values(instance["IntegrationInstanceId"])
            hook.update_fields(instance["IntegrationInstanceId"], {"Event exists": True})
            hook.complete_step(instance["IntegrationInstanceId"])

    :param workflowsoft_conn_id: the Airflow connection id (default ``workflowsoft_default``)
    :param client_options: :class:`~airflow_provider_workflowsoft.api.client.ClientConfig` fields that win over
        the connection (for example ``{"pool_size": 16}``)
    :param client_kwargs: keyword arguments of :class:`WorkflowsoftClient` (for example ``sleep`` in tests)
    """

    conn_name_attr = "workflowsoft_conn_id"
    default_conn_name = "workflowsoft_default"
    conn_type = "workflowsoft"
    hook_name = "Workflowsoft"

    def __init__(
        self,
        workflowsoft_conn_id: str = default_conn_name,
        *,
        client_options: Mapping[str, Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflowsoft_conn_id = workflowsoft_conn_id
        self._client_options = dict(client_options or {})
        self._client_kwargs = dict(client_kwargs or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workflowsoft_conn_id={self.workflowsoft_conn_id!r})"

    @cached_property
    def config(self) -> ClientConfig:
        """The client settings read from the connection."""
        conn = self.get_connection(self.workflowsoft_conn_id)
        config = config_from_connection(conn, **self._client_options)
        for secret in config.secrets():
            mask_secret(secret)
        return config

    @cached_property
    def client(self) -> WorkflowsoftClient:
        """The API client, built once per hook (one pooled session, one token per lifetime)."""
        kwargs = {"on_token": mask_secret, **_metrics_kwargs(), **self._client_kwargs}
        return _sync_client(self.config, **kwargs)

    async def get_async_client(self, **client_options: Any) -> AsyncWorkflowsoftClient:
        """Return a new async client for a trigger.

        The connection and its extras are read, and every secret registered with the masker, the async-safe way (nothing
        on the event loop waits for the supervisor). The caller closes it (``await client.aclose()``).
        """
        # lazy: httpx only where a trigger runs (DAG parsing on Airflow 2.11 never loads it)
        from airflow_provider_workflowsoft.api.async_client import AsyncWorkflowsoftClient

        conn = await aget_connection(self.workflowsoft_conn_id)
        extras = await aconnection_extras(conn)
        config = config_from_connection(conn, extras=extras, **{**self._client_options, **client_options})
        for secret in config.secrets():
            await amask_secret(secret)
        # Tokens minted later are masked from the client's thread-free callback: the in-process masker.
        kwargs = {"on_token": mask_secret_in_process, **_metrics_kwargs(), **self._client_kwargs}
        return AsyncWorkflowsoftClient(config, **kwargs)

    def get_conn(self) -> WorkflowsoftClient:
        """Return the API client (the Airflow name for it)."""
        return self.client

    # -- every call of the API: the client's methods, each handed on explicitly ---------------------
    # (documented on WorkflowsoftClient; a new call of the API gets a method here too)

    def list_process_diagrams(self, search_term: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """List process diagrams (``Id``, ``Title``), optionally only those matching ``search_term``."""
        return self.client.list_process_diagrams(search_term, limit)

    def list_integration_steps(self, process_diagram_id: int | str) -> list[dict[str, Any]]:
        """List the integration steps (``Id``, ``Title``) of a process diagram."""
        return self.client.list_integration_steps(process_diagram_id)

    def find_process_diagram(self, name: str) -> dict[str, Any]:
        """Return the one process diagram titled ``name`` (case-insensitive)."""
        return self.client.find_process_diagram(name)

    def find_integration_step(self, process_diagram_id: int | str, name: str) -> dict[str, Any]:
        """Return the one integration step titled ``name`` (case-insensitive) in a process diagram."""
        return self.client.find_integration_step(process_diagram_id, name)

    def poll_new_integration(self, integration_step_id: int | str | None = None, *,
                             integration_diagram_id: int | str | None = None) -> dict[str, Any] | None:
        """Return the next new integration instance of a step, or ``None`` when there is none."""
        return self.client.poll_new_integration(integration_step_id, integration_diagram_id=integration_diagram_id)

    def get_fields(self, integration_instance_id: Any) -> list[Field]:
        """Return the fields of an integration instance, values parsed by type."""
        return self.client.get_fields(integration_instance_id)

    def get_field_values(self, integration_instance_id: Any) -> dict[str, Any]:
        """Return ``{label: value}`` of an integration instance."""
        return self.client.get_field_values(integration_instance_id)

    def update_fields(
        self,
        integration_instance_id: Any,
        values: Mapping[str, Any],
        *,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
    ) -> dict[str, Any]:
        """Write ``values`` after validating all of them (see :meth:`WorkflowsoftClient.update_fields`)."""
        return self.client.update_fields(integration_instance_id, values, fields=fields, on_behalf_of=on_behalf_of)

    def complete_step(
        self,
        integration_instance_id: Any,
        *,
        validate: bool = True,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
        already_completed_ok: bool = False,
    ) -> dict[str, Any]:
        """Complete an integration instance (see :meth:`WorkflowsoftClient.complete_step`)."""
        return self.client.complete_step(integration_instance_id, validate=validate, fields=fields,
                                         on_behalf_of=on_behalf_of, already_completed_ok=already_completed_ok)

    def update_and_complete(
        self,
        integration_instance_id: Any,
        values: Mapping[str, Any] | None,
        *,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
        already_completed_ok: bool = False,
    ) -> dict[str, Any]:
        """Validate, write, then complete (see :meth:`WorkflowsoftClient.update_and_complete`)."""
        return self.client.update_and_complete(integration_instance_id, values, fields=fields,
                                               on_behalf_of=on_behalf_of, already_completed_ok=already_completed_ok)

    def search_users(self, query: str, limit: int = 15) -> list[dict[str, Any]]:
        """Search users whose name or email matches ``query`` (``Id``, ``FullName``, ``Email``)."""
        return self.client.search_users(query, limit)

    def find_user(self, query: Any) -> dict[str, Any]:
        """Return exactly one user whose id, email or full name equals ``query`` (case-insensitive)."""
        return self.client.find_user(query)

    def resolve_user_id(self, user: Any) -> int | str:
        """Return a user id from an id, an email or a full name."""
        return self.client.resolve_user_id(user)

    def resolve_on_behalf_of(self, on_behalf_of: Any = None, *, needs_user: str | None = None) -> str:
        """Return the ``X-OnBehalfOf-Id`` header of a request (see :meth:`WorkflowsoftClient.resolve_on_behalf_of`)."""
        return self.client.resolve_on_behalf_of(on_behalf_of, needs_user=needs_user)

    def start_process(
        self,
        process_diagram_id: int | str,
        fields: Mapping[str, Any] | None = None,
        on_behalf_of: str | int | None = None,
    ) -> dict[str, Any]:
        """Start a process; return the process instance (``Id``, ``Title``)."""
        return self.client.start_process(process_diagram_id, fields, on_behalf_of)

    def create_task(
        self,
        title: str,
        assigned_user_id: int | str | None = None,
        description: str | None = None,
        files: list[Any] | None = None,
        on_behalf_of: str | int | None = None,
    ) -> dict[str, Any]:
        """Create a task; return the task object (``Id``, ``Title``, ``Description``)."""
        return self.client.create_task(title, assigned_user_id, description, files, on_behalf_of)

    # -- connection test and form -------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (list one process diagram), without retries.

        Returns ``(True, message)`` or ``(False, reason)``; no secret is ever part of the message.
        """
        try:
            config = config_from_connection(
                self.get_connection(self.workflowsoft_conn_id), max_retries=0, connect_timeout=5.0
            )
            for secret in config.secrets():
                mask_secret(secret)
            with _sync_client(config, on_token=mask_secret) as client:
                return True, client.check()
        except WorkflowsoftConfigError as exc:
            return False, str(exc)
        except WorkflowsoftAPIError as exc:
            if exc.status in (401, 403):
                return False, (
                    f"Workflowsoft refused the credentials (HTTP {exc.status}) at {exc.path}: check the API token "
                    f"(or the administrator login and password) of the connection {self.workflowsoft_conn_id!r}"
                    + (f". Server said: {exc.server_message}" if exc.server_message else "")
                )
            return False, str(exc)
        except WorkflowsoftConnectionError as exc:
            return False, f"Could not reach {config.base_url}: {exc.reason}"
        except WorkflowsoftError as exc:
            return False, str(exc)
        except Exception as exc:  # a test button must answer, whatever happened
            return False, f"{type(exc).__name__}: {exc}"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the connection form of Airflow 2.11 (Airflow 3.2+ reads ``connection-types`` of the provider info)."""
        return connection_form.hook_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form of Airflow 2.11."""
        return connection_form.form_widgets()
