"""The Workflowsoft API without I/O: what each call sends, how answers are read, when to retry.

Both transports (:mod:`.client` on ``requests``, :mod:`.async_client` on ``httpx``) build their
requests and read their answers here, so the sync hook and the async trigger follow the same rules.
Every reading of a point the vendor's page leaves open is made here and listed in ``docs/assumptions.md``.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import html
import json
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftAuthError,
    WorkflowsoftConnectionError,
    WorkflowsoftError,
    WorkflowsoftInputError,
    WorkflowsoftLookupError,
    WorkflowsoftResponseError,
    WorkflowsoftUnknownOutcomeError,
    status_error,
)
from airflow_provider_workflowsoft.api.fields import _lookup, did_you_mean, param_key, to_jsonable, to_wire_json
from airflow_provider_workflowsoft.api.limiter import RateLimiter
from airflow_provider_workflowsoft.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
)

USER_AGENT = "airflow-provider-workflowsoft"

TOKEN_PATH = "/api/v2/app/apitoken"

#: Keys read from a token answer that is a JSON object, compared case-insensitively.
TOKEN_KEYS = ("token", "access_token", "accessToken", "apiToken", "api_token", "value")


def normalise_base_url(host: str | None, port: int | None = None) -> str:
    """``api.example.com/`` -> ``https://api.example.com``; an empty host gives the public API.

    A port is added when the host has none (the Airflow form keeps host and port apart).
    """
    text = (host or "").strip()
    if not text:
        text = DEFAULT_BASE_URL
    if "://" not in text:
        text = "https://" + text
    text = text.rstrip("/")
    if port:
        scheme, rest = text.split("://", 1)
        hostpart, sep, path = rest.partition("/")
        if not re.search(r":\d+$", hostpart):
            default_port = {"https": 443, "http": 80}.get(scheme.lower())
            if port != default_port:
                hostpart = f"{hostpart}:{port}"
        text = f"{scheme}://{hostpart}{sep}{path}".rstrip("/")
    return text


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One API request, before a transport sends it.

    ``creates`` marks requests that create something (start a process, create a task): they are resent
    only when the server surely did not act on them. ``kind`` names the endpoint without any id in it
    (``poll``, ``get_fields``, ...): what request observers (metrics) group by.
    """

    method: str
    path: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    body: Any = None
    on_behalf_of: str | None = None
    creates: bool = False
    kind: str = dataclasses.field(default="other", compare=False)  # metadata, not part of the request

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        if self.on_behalf_of is not None:
            headers["X-OnBehalfOf-Id"] = self.on_behalf_of
        return headers

    def content(self) -> bytes | None:
        return None if self.body is None else dumps_body(self.body).encode("utf-8")


#: Texts read as true and as false (templated booleans, connection extras): trimmed, case-insensitive.
TRUE_TEXTS = frozenset({"true", "1", "yes", "on"})
FALSE_TEXTS = frozenset({"false", "0", "no", "off"})


def blank(value: Any) -> bool:
    """Tell whether ``value`` is missing: ``None``, or a string of whitespace only."""
    return value is None or (isinstance(value, str) and not value.strip())


def to_bool(value: Any, *, strict: bool = False, name: str = "the value") -> bool:
    """Return a templated boolean (``"True"``/``"false"`` after rendering) as a bool.

    :param strict: refuse (``WorkflowsoftInputError``, naming ``name``) what reads as neither true nor false (a
        connection's extra); otherwise a text is true when it is in :data:`TRUE_TEXTS`, anything else by ``bool()``
    """
    if isinstance(value, bool):
        return value
    if not strict:
        return value.strip().lower() in TRUE_TEXTS if isinstance(value, str) else bool(value)
    text = str(value).strip().lower()
    if text in TRUE_TEXTS or text in FALSE_TEXTS:
        return text in TRUE_TEXTS
    raise WorkflowsoftInputError(f"{name} is {value!r}, which is neither true ({', '.join(sorted(TRUE_TEXTS))}) nor "
                                 f"false ({', '.join(sorted(FALSE_TEXTS))})")


def coerce_id(value: Any, name: str = "integration_instance_id") -> int | str:
    """Ids are integers on the page.

    A numeric string, or an instance dict of a poll, is accepted, anything else is refused.
    """
    if isinstance(value, Mapping) and "IntegrationInstanceId" in value:
        value = value["IntegrationInstanceId"]
    if isinstance(value, bool) or value is None:
        raise WorkflowsoftInputError(f"{name} must be an integer id, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise WorkflowsoftInputError(f"{name} must be an integer id, got {value!r}")


def deprecated(message: str, stacklevel: int = 2) -> None:
    """Warn that an old name was used, from a layer that imports nothing of Airflow.

    The warning is the provider's (``deprecation.warn_deprecated``), imported only when an old name is used:
    ``api`` imports nothing of Airflow, and falls back to a plain ``DeprecationWarning`` without it.
    """
    try:
        from airflow_provider_workflowsoft.deprecation import warn_deprecated
    except ImportError:
        warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)  # the caller's caller: the user's line
    else:
        warn_deprecated(message)


def renamed_argument(new_value: Any, old_value: Any, *, new: str, old: str, owner: str) -> Any:
    """Return the value of a renamed argument: the old name still works, with a deprecation warning."""
    if old_value is None:
        return new_value
    deprecated(f"{owner}({old}=...) is deprecated: use {new}=...", stacklevel=3)
    if new_value is not None and new_value != old_value:
        raise WorkflowsoftInputError(f"{owner} got both {new}={new_value!r} and {old}={old_value!r}; keep {new}")
    return old_value


#: The keys an instance dict given by a user may name its id under.
INSTANCE_ID_KEYS = ("IntegrationInstanceId", "integration_instance_id", "integrationInstanceId")


def coerce_instance_id(value: Any) -> int:
    """Return an integration instance id a user gave: an int, a numeric string, an instance dict or its JSON text."""
    original = value
    if isinstance(value, str) and value.strip().startswith("{"):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, Mapping):
        value = next((value[key] for key in INSTANCE_ID_KEYS if key in value), value)
    return _positive_id(value, "integration_instance_id must be an integer id of 1 or more, a numeric string or an "
                               f"instance dict with 'IntegrationInstanceId', got {_described(original)}")


def _described(value: Any) -> str:
    """Return a refused value as an error message shows it, cut to 200 characters.

    A dict is shown by its keys only (its values may be field values or secrets), anything else by its repr.
    """
    if isinstance(value, Mapping):
        return _shorten("{" + ", ".join(f"{key!r}: ..." for key in value) + "}", 200)
    return _shorten(repr(value), 200)


def given_instances(value: Any, name: str) -> list[tuple[int, Any]]:
    """Return ``(id, instance)`` of each integration instance a user gave in one argument, order and repeats kept.

    ``value`` is ``None``, one instance or a list of them, or the text of one of those (a rendered template): JSON
    text, or comma-separated ids. An instance is an id (:func:`coerce_instance_id`) or an instance dict keyed by
    one of :data:`INSTANCE_ID_KEYS`; its JSON text is returned as the dict. Anything else, blank text included, is
    refused, naming ``name``, the refused item (a dict by its keys, cut short) and its place in the list, and why:
    not the values of a dict, nor the whole list, which may carry field values.
    """
    items = value
    if isinstance(items, str):
        text = items.strip()
        if not text:  # a template that rendered nothing: a mistake to name, not "no instances"
            raise WorkflowsoftInputError(f"{name}: {value!r} is refused: it is blank (give None for no instances)")
        if text[:1] in ("[", "{"):
            try:
                items = json.loads(text)
            except ValueError as exc:
                raise WorkflowsoftInputError(f"{name}: {value!r} is refused: it is not valid JSON ({exc})") from None
        else:
            items = [part for part in text.split(",") if part.strip()]
    if items is None:
        return []
    if isinstance(items, Mapping | str | int):
        items = [items]
    if not isinstance(items, Iterable) or isinstance(items, bytes):
        raise WorkflowsoftInputError(f"{name}: {value!r} is refused: give integration instances (ids or instance "
                                     "dicts), a list of them, their JSON text or comma-separated ids")
    found = []
    for position, item in enumerate(items, start=1):
        if isinstance(item, str) and item.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                item = json.loads(item)
        try:
            found.append((coerce_instance_id(item), item))
        except WorkflowsoftInputError as exc:
            # The item and its place, not the whole value: the other instances may carry field values.
            where = "" if item is value else f" (item {position})"
            raise WorkflowsoftInputError(f"{name}: {_described(item)}{where} is refused: {exc}") from None
    return found


def _positive_id(value: Any, refusal: str) -> int:
    """Return ``value`` as a positive integer id (:func:`coerce_id`), or refuse it with ``refusal``."""
    try:
        number = coerce_id(value)
    except WorkflowsoftInputError:
        number = 0
    if not isinstance(number, int) or number <= 0:
        raise WorkflowsoftInputError(refusal)
    return number


#: The keys a process instance's dict names its id under: a poll answer's, then a start's answer (``Id``).
PROCESS_INSTANCE_ID_KEYS = ("ProcessInstanceId", "process_instance_id", "processInstanceId", "Id")


def coerce_process_instance_id(value: Any) -> int:
    """Return a process instance id a user gave.

    An int, a numeric string, the start's answer (``{"Id", "Title"}``), an instance dict of a poll
    (``ProcessInstanceId``) or a one-element list of them, or the JSON or Python text of one of those (a rendered
    template: ``"{{ ti.xcom_pull('start') }}"``).
    """
    original = value
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except ValueError:
            with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
                value = ast.literal_eval(value.strip())
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping):
        value = next((value[key] for key in PROCESS_INSTANCE_ID_KEYS if key in value), None)
    return _positive_id(value, "process_instance_id must be a process instance id (an integer, a numeric string, the "
                               f"start operator's answer with 'Id', or an instance dict with 'ProcessInstanceId'), "
                               f"got {original!r}")


def id_value(value: Any) -> Any:
    """Return an id as the API or a record holds it, read leniently: a numeric string or whole Decimal as an int.

    Anything else (``None``, a name, a bool) comes back unchanged: answers and records are normalised, not refused.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def instance_key(instance: Any) -> Any:
    """Return the id an instance (a poll's dict, or its id) is known by: :func:`id_value` of its id."""
    if isinstance(instance, Mapping):
        instance = instance.get("IntegrationInstanceId")
    return id_value(instance)


def poll_seconds(value: Any) -> float:
    """``poll_interval`` in seconds (a timedelta or a number of seconds), more than 0."""
    interval = as_timedelta(value, "poll_interval")
    if interval is None or interval.total_seconds() <= 0:
        raise WorkflowsoftInputError(f"poll_interval must be more than 0 seconds, got {value!r}")
    return interval.total_seconds()


def as_timedelta(value: Any, name: str) -> dt.timedelta | None:
    """Return a duration given as a timedelta, a number of seconds, or a numeric string (rendered templates)."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise WorkflowsoftInputError(f"{name} must be a timedelta or a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise WorkflowsoftInputError(f"{name} must not be negative, got {value!r}")
    return dt.timedelta(seconds=seconds)


def call_list_process_diagrams(search_term: str | None, limit: int) -> Call:
    params: dict[str, Any] = {"mode": "view", "limit": limit}
    if search_term:
        params["searchTerm"] = search_term
    return Call("GET", "/api/v2/workflows", params, kind="list_diagrams")


def call_list_integration_steps(process_diagram_id: Any) -> Call:
    pid = coerce_id(process_diagram_id, "process_diagram_id")
    return Call("GET", f"/api/v2/workflows/{pid}/tasks", {"integration": "true"}, kind="list_steps")


def call_poll_new_integration(integration_step_id: Any) -> Call:
    iid = coerce_id(integration_step_id, "integration_step_id")
    return Call("GET", "/api/v2/workflows/instances/new-integrations", {"id": iid}, kind="poll")


def call_get_fields(integration_instance_id: Any) -> Call:
    iid = coerce_id(integration_instance_id)
    return Call("GET", f"/api/v2/workflows/instances/tasks/{iid}/variables", kind="get_fields")


def call_update_fields(integration_instance_id: Any, wire_fields: dict[str, Any], on_behalf_of: str) -> Call:
    iid = coerce_id(integration_instance_id)
    body = {"TaskId": iid, "Fields": wire_fields}
    return Call("POST", "/api/v2/workflows/instances/variables", body=body, on_behalf_of=on_behalf_of,
                kind="update_fields")


def call_complete_step(integration_instance_id: Any, on_behalf_of: str) -> Call:
    iid = coerce_id(integration_instance_id)
    body = {"Action": "Complete", "CustomAction": "__AUTO__"}
    return Call("PATCH", f"/api/v2/tasks/{iid}/action", body=body, on_behalf_of=on_behalf_of, kind="complete")


def call_search_users(query: str, limit: int) -> Call:
    return Call("GET", "/api/users/search", {"Query": query, "entityType": "users", "limit": limit},
                kind="search_users")


def call_start_process(process_diagram_id: Any, fields: Mapping[str, Any] | None, on_behalf_of: str) -> Call:
    pid = coerce_id(process_diagram_id, "process_diagram_id")
    body = {"TemplateId": pid, "Fields": process_fields(fields)}
    return Call("POST", "/api/v2/workflows/start", body=body, on_behalf_of=on_behalf_of, creates=True,
                kind="start_process")


def call_create_task(
    title: str,
    assigned_user_id: Any,
    description: str | None,
    files: Any,
    on_behalf_of: str,
) -> Call:
    problems = []
    if not isinstance(title, str) or not title.strip():
        problems.append(f"title: {title!r} is refused: a task needs a non-empty title")
    if description is not None and not isinstance(description, str):
        problems.append(f"description: {description!r} is refused: it must be a string")
    if files is not None and not isinstance(files, list):
        problems.append(f"files: {files!r} is refused: it must be a list")
    if problems:
        raise WorkflowsoftInputError("Cannot create the task, nothing was sent: " + "; ".join(problems))
    body: dict[str, Any] = {"Title": title}
    if assigned_user_id is not None:
        body["AssignedUserId"] = coerce_id(assigned_user_id, "assigned_user_id")
    if description is not None:
        body["Description"] = description
    if files:
        body["Files"] = to_jsonable(files)
    return Call("POST", "/api/v2/tasks", body=body, on_behalf_of=on_behalf_of, creates=True, kind="create_task")


def basic_auth_header(login: str, password: str) -> str:
    """Return ``Basic <base64(login:password)>``: how the token endpoint is assumed to authenticate."""
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode("ascii")


def call_mint_token(lifetime_seconds: int) -> Call:
    return Call("GET", TOKEN_PATH, {"lifeTimeInSec": lifetime_seconds}, kind="mint_token")


_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def process_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the ``Fields`` of a process start.

    A uuid key becomes ``field_<key>``, other names pass as they are; values are made JSON-safe (Decimals stay exact
    numbers, datetimes become ISO 8601 UTC).
    """
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise WorkflowsoftInputError(f"fields must be a mapping of field key -> value, got {fields!r}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            raise WorkflowsoftInputError(f"fields: the name {name!r} is refused: names must be strings")
        wire_name = param_key(name) if _UUID_RE.match(name) else name
        out[wire_name] = to_wire_json(value)
    return out


def dumps_body(body: Any) -> str:
    """JSON text of a request body, with Decimals written as JSON numbers digit for digit.

    ``json`` cannot write a Decimal as a number, and going through ``float`` loses digits; each
    Decimal is replaced by a unique placeholder string, then the placeholder by the exact digits.
    """
    import uuid  # lazily: DAG files import this module through the operators

    placeholders: dict[str, str] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise WorkflowsoftInputError(f"{value!r} is not a finite number and cannot be sent")
            token = f"__decimal_{uuid.uuid4().hex}__"
            placeholders[token] = str(value)
            return token
        if isinstance(value, Mapping):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [swap(v) for v in value]
        return value

    try:
        text = json.dumps(swap(body), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise WorkflowsoftInputError(f"the request body cannot be written as JSON: {exc}") from None
    for token, digits in placeholders.items():
        text = text.replace(f'"{token}"', digits)
    return text


# ---------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------


def _looks_like_html(text: str, content_type: str) -> bool:
    start = text.lstrip()[:100].lower()
    return "html" in content_type.lower() or start.startswith(("<!doctype", "<html", "<?xml", "<head", "<body"))


def decode_json(text: str, content_type: str, method: str, path: str) -> Any:
    """Return the JSON value of a 2xx answer; ``None`` for an empty body. HTML or broken JSON is a clear error."""
    if not text.strip():
        return None
    if _looks_like_html(text, content_type):
        shown = extract_message(text, content_type)
        raise WorkflowsoftResponseError(
            f"Workflowsoft answered {method} {path} with an HTML page instead of JSON: {shown!r}"
        )
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        start = text.strip()[:120]
        raise WorkflowsoftResponseError(
            f"Workflowsoft answered {method} {path} with a body that is not JSON: {start!r}"
        ) from None


def extract_message(text: str, content_type: str = "", limit: int = 300) -> str:
    """Return the server's error message.

    JSON ``Message``/``message``/``error``/``detail``/``title``, the title of an HTML page, or the start of a text body.
    """
    text = text or ""
    stripped = text.strip()
    if not stripped:
        return ""
    if stripped[:1] in "{[\"":
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        found = _message_from_json(data)
        if found:
            return _shorten(found, limit)
    if _looks_like_html(stripped, content_type):
        for pattern in (r"<title[^>]*>(.*?)</title>", r"<h1[^>]*>(.*?)</h1>", r"<p[^>]*>(.*?)</p>"):
            match = re.search(pattern, stripped, re.I | re.S)
            if match and match.group(1).strip():
                return _shorten(html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip(), limit)
        return _shorten(re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", stripped))).strip(), limit)
    return _shorten(stripped, limit)


def _message_from_json(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if not isinstance(data, Mapping):
        return None
    for key in ("Message", "message", "error_description", "error", "detail", "title", "errors"):
        value = _lookup(data, key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, Mapping):
            inner = _message_from_json(value)
            if inner:
                return inner
        if isinstance(value, list) and value:
            return "; ".join(str(_message_from_json(v) or v) for v in value)
    return None


def _shorten(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_token(text: str, content_type: str = "") -> str:
    """Return the token of an ``apitoken`` answer.

    A JSON string, a JSON object with a token field (any of :data:`TOKEN_KEYS`, any case, also one level down), or the
    plain text of the body.
    """
    stripped = (text or "").strip()
    if not stripped:
        raise WorkflowsoftResponseError("the token endpoint answered with an empty body")
    if _looks_like_html(stripped, content_type):
        raise WorkflowsoftResponseError("the token endpoint answered with an HTML page instead of a token")
    data: Any
    try:
        data = json.loads(stripped)
    except ValueError:
        data = stripped  # plain text
    if not isinstance(data, str | Mapping):
        data = stripped  # plain text that happens to read as a JSON number
    token = _token_from(data)
    if not token or any(ch.isspace() for ch in token):
        raise WorkflowsoftResponseError("the token endpoint's answer holds no token this client can read")
    return token


def _token_from(data: Any) -> str | None:
    if isinstance(data, str):
        return data.strip()
    if isinstance(data, Mapping):
        for key in TOKEN_KEYS:
            value = _lookup(data, key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        for value in data.values():
            if isinstance(value, Mapping):
                inner = _token_from(value)
                if inner:
                    return inner
    return None


def unwrap_list(data: Any, what: str, method: str, path: str) -> list[Any]:
    """Return a list answer, also when wrapped in an object (``items``, ``data``, ``results``, ``value``)."""
    if data is None:
        return []
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        for key in ("items", "data", "results", "value", "records"):
            inner = _lookup(data, key)
            if isinstance(inner, list):
                return inner
    raise WorkflowsoftResponseError(
        f"Workflowsoft answered {method} {path} with {type(data).__name__} where a list of {what} was expected"
    )


def normalise_poll(data: Any) -> dict[str, Any] | None:
    """Return a poll answer as ``{"IntegrationInstanceId", "ProcessInstanceId"}``, or ``None``.

    ``None`` stands for every "nothing new" shape: no body, ``null``, ``{}``, ``[]``, an object whose instance id is
    null or 0. A list is read as instances, oldest first: its first element is taken.
    """
    if isinstance(data, list):
        data = next((item for item in data if normalise_poll(item) is not None), None)
    if not isinstance(data, Mapping) or not data:
        return None
    instance_id = _lookup(data, "IntegrationInstanceId", "integrationInstanceID", "TaskId", "Id")
    if instance_id in (None, "", 0, "0"):
        return None
    process_id = _lookup(data, "ProcessInstanceId", "processInstanceID", "WorkflowInstanceId")
    return {"IntegrationInstanceId": id_value(instance_id), "ProcessInstanceId": id_value(process_id)}


def normalise_object(data: Any, method: str, path: str) -> dict[str, Any]:
    """Return an object answer (process instance, task), JSON-safe; ``Id`` read case-insensitively."""
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, Mapping):
        got = "an empty body" if data is None else type(data).__name__
        raise WorkflowsoftResponseError(
            f"Workflowsoft answered {method} {path} with {got} where an object was expected"
        )
    out = {str(k): to_jsonable(v) for k, v in data.items()}
    for canonical in ("Id", "Title"):
        if canonical not in out:
            value = _lookup(data, canonical)
            if value is not None:
                out[canonical] = to_jsonable(value)
    if "Id" in out:
        out["Id"] = id_value(out["Id"])
    return out


def looks_already_completed(status: int, message: str) -> bool:
    """Tell whether an error answer to a completion says "this instance is already completed"."""
    if status == 409:
        return True
    return status in (400, 422) and bool(re.search(r"already|complet|closed|finished|not (open|active)", message, re.I))


# ---------------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------------

#: Transport failures, by whether the request surely did not reach the server.
NOT_SENT = "not-sent"  # connection refused, DNS failure, connect timeout, TLS handshake
MAYBE_SENT = "maybe-sent"  # read timeout, connection dropped while waiting for the answer


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; honours ``Retry-After`` up to ``retry_after_max``.

    Reads and idempotent writes are retried on transport failures, 429 and 5xx. Creates are retried
    only when the server surely did not act: not sent, 429, 503. Other 4xx are never retried.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0

    def should_retry(self, call: Call, *, status: int | None = None, failure: str | None = None) -> bool:
        if failure is not None:
            return failure == NOT_SENT or not call.creates
        if status is None:
            return False
        if call.creates:
            return status in (429, 503)
        return status == 429 or 500 <= status <= 599

    def delay(self, attempt: int, retry_after: str | None = None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(hinted, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        # full jitter, with a floor so retries never hammer the server back to back
        return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date. ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # lazily: only HTTP-date Retry-After values need it

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------------------------------------------
# Token cache
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _CachedToken:
    token: str
    expires_at: float


class TokenCache:
    """Minted tokens, per process, keyed by (base URL, login, password digest, lifetime).

    A token is reused until ``min(60 s, 10 % of its lifetime)`` before it runs out, so a process asks
    for one token per lifetime whatever the number of hooks it builds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[tuple[str, str, str, int], _CachedToken] = {}
        self._lock = threading.Lock()
        self.clock = clock

    @staticmethod
    def key(base_url: str, login: str, password: str, lifetime: int) -> tuple[str, str, str, int]:
        digest = hashlib.sha256(password.encode("utf-8")).hexdigest()
        return (base_url, login, digest, lifetime)

    @staticmethod
    def margin(lifetime: int) -> float:
        return min(60.0, lifetime * 0.1)

    def get(self, key: tuple[str, str, str, int]) -> str | None:
        with self._lock:
            cached = self._tokens.get(key)
            if cached and self.clock() < cached.expires_at - self.margin(key[3]):
                return cached.token
            return None

    def put(self, key: tuple[str, str, str, int], token: str, minted_at: float) -> None:
        with self._lock:
            self._tokens[key] = _CachedToken(token, minted_at + key[3])

    def discard(self, key: tuple[str, str, str, int], token: str | None = None) -> None:
        with self._lock:
            cached = self._tokens.get(key)
            if cached and (token is None or cached.token == token):
                del self._tokens[key]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


#: The process-wide cache shared by every client of this process.
TOKEN_CACHE = TokenCache()


# ---------------------------------------------------------------------------------------------------
# One call's attempts: the retry loop's decisions, shared by the sync and the async transport
# ---------------------------------------------------------------------------------------------------


class Answer:
    """What a transport got back, reduced to what the functions here read."""

    __slots__ = ("content_type", "earlier_attempt_maybe_applied", "headers", "status", "text")

    def __init__(self, status: int, text: str, content_type: str, headers: Mapping[str, str]) -> None:
        self.status = status
        self.text = text
        self.content_type = content_type
        self.headers = headers
        # True when an earlier attempt of the same call may have reached the server (its answer was
        # lost, or it was a 5xx): a completion then reads "already completed" as its own success.
        self.earlier_attempt_maybe_applied = False


#: :meth:`Attempts.answered` verdicts besides a wait in seconds.
DONE = "done"
REFRESH_TOKEN = "refresh-token"

log = logging.getLogger("airflow_provider_workflowsoft.api.client")


@dataclasses.dataclass(frozen=True)
class RequestEvent:
    """One HTTP request as a request observer sees it, once its answer (or its failure) is known.

    :param method: the HTTP method
    :param kind: the endpoint, without ids (:attr:`Call.kind`: ``poll``, ``get_fields``, ``complete``...)
    :param status: the HTTP status, or ``None`` when the transport failed (no answer)
    :param seconds: from sending to the answer (or the failure)
    :param attempt: 1 for the first attempt of a call, 2 and more for its retries
    :param rate: the client's pace when the answer came, in requests per second (its
        :class:`~.limiter.RateLimiter`); ``None`` when unpaced
    :param waited: seconds the request waited for the pace (or for a shared pause after a 429) before it was sent
    """

    method: str
    kind: str
    status: int | None
    seconds: float
    attempt: int
    rate: float | None = None
    waited: float = 0.0


#: Called with every :class:`RequestEvent`; must be quick and must not raise (errors are logged and ignored).
RequestObserver = Callable[[RequestEvent], None]


class Attempts:
    """The attempts of one call.

    A transport loops: wait while :meth:`pace` says so, send, then ask :meth:`failed` or :meth:`answered` what to do
    next (wait that many seconds and resend, renew the token and resend, or stop).

    :param can_refresh: a 401 may be answered by renewing a minted token once
    :param redact: removes secrets from texts that go into logs and errors
    :param observe: told about every attempt once its answer or failure is known (metrics)
    :param clock: the timer of :class:`RequestEvent` ``seconds``
    :param limiter: the client's pace, shared by all its calls: told of every answer, 429s cut it and pause every
        thread (``None``: unpaced)
    """

    def __init__(
        self,
        call: Call,
        policy: RetryPolicy,
        *,
        can_refresh: bool,
        redact: Callable[[str], str],
        rand: Callable[[], float] = random.random,
        observe: RequestObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.call = call
        self.policy = policy
        self.can_refresh = can_refresh
        self.redact = redact
        self.rand = rand
        self.observe = observe
        self.clock = clock
        self.number = 0
        self.maybe_applied = False
        self._sent_at = 0.0
        self._sends = 0  # every attempt sent, token renewals included (``number`` is not counted for those)
        self.limiter = limiter
        self._slot: tuple[float, int] | None = None  # the send time reserved with the limiter, and its epoch
        self._epoch = 0  # the limiter's epoch when the attempt in flight was sent
        self._waited = 0.0
        self._waited_until: float | None = None  # the end of this call's latest retry wait (limiter clock)

    def pace(self) -> float:
        """Return the seconds to wait before the next attempt may be sent (0: send it now).

        Asked again after each wait: the reserved time has then been waited for, unless a 429 of another thread
        meanwhile cut the pace (a new epoch), which voids it and pauses this thread too. The waits before this call's
        retries (:meth:`failed`, :meth:`answered`) count as waited.
        """
        limiter = self.limiter
        if limiter is None:
            return 0.0
        slot = self._slot
        if slot is not None and slot[1] == limiter.epoch:  # waited for, and still valid
            self._epoch, self._slot = slot[1], None
            return 0.0
        slot = limiter.reserve()
        now = limiter.clock()
        if self._waited_until is not None:
            now = max(now, self._waited_until)
        wait = slot[0] - now
        if wait > 0:
            self._slot = slot
            self._waited += wait
            return wait
        self._epoch, self._slot = slot[1], None
        return 0.0

    def _retry_wait(self, wait: float) -> float:
        """Return ``wait``, the time before a retry; it counts as waited for the pace (:meth:`pace`)."""
        if self.limiter is not None:
            until = self.limiter.clock() + wait
            self._waited_until = until if self._waited_until is None else max(self._waited_until, until)
        return wait

    def next(self) -> None:
        """Count the attempt about to be sent."""
        self.number += 1
        self._sends += 1
        if self.observe is not None:
            self._sent_at = self.clock()

    def _report(self, status: int | None) -> None:
        if self.observe is None:
            return
        rate = self.limiter.rate() if self.limiter is not None else None
        event = RequestEvent(self.call.method, self.call.kind, status, self.clock() - self._sent_at, self._sends,
                             rate, self._waited)
        self._waited = 0.0
        try:
            self.observe(event)
        except Exception as exc:  # metrics must never break a request
            log.debug("A request observer failed: %s", exc)

    def failed(self, failure: str, reason: str) -> float:
        """Decide what follows a failed send (``NOT_SENT`` or ``MAYBE_SENT``): seconds to wait, or the final error."""
        self._report(None)
        call = self.call
        reason = self.redact(reason)
        self.maybe_applied = self.maybe_applied or failure == MAYBE_SENT
        if self.number <= self.policy.max_retries and self.policy.should_retry(call, failure=failure):
            wait = self.policy.delay(self.number, rand=self.rand)
            log.warning("Workflowsoft %s %s failed (%s); retry %d/%d in %.1f s",
                        call.method, call.path, reason, self.number, self.policy.max_retries, wait)
            return self._retry_wait(wait)
        if call.creates and failure == MAYBE_SENT:
            raise WorkflowsoftUnknownOutcomeError(call.method, call.path, reason)
        raise WorkflowsoftConnectionError(call.method, call.path, reason, sent=failure == MAYBE_SENT)

    def answered(self, answer: Answer) -> float | str:
        """Decide what follows an answer of the server.

        :data:`DONE` (hand the answer back), :data:`REFRESH_TOKEN` (renew the token and resend, once), or seconds to
        wait before resending.
        """
        self._report(answer.status)
        answer.earlier_attempt_maybe_applied = self.maybe_applied
        wait: float | None = None
        if self.limiter is not None:
            if answer.status == 429:  # one pause for every thread of the client, and a slower pace after it
                wait = self.policy.delay(self.number, answer.headers.get("Retry-After"), rand=self.rand)
                self.limiter.throttled(self._epoch, wait)
            else:
                self.limiter.admitted()
        if answer.status == 401 and self.can_refresh:
            # The token may have been revoked or expired early: get a new one, once.
            self.can_refresh = False
            self.number -= 1
            return REFRESH_TOKEN
        if answer.status < 400:
            return DONE
        self.maybe_applied = self.maybe_applied or answer.status >= 500
        if self.number <= self.policy.max_retries and self.policy.should_retry(self.call, status=answer.status):
            if wait is None:
                wait = self.policy.delay(self.number, answer.headers.get("Retry-After"), rand=self.rand)
            log.warning("Workflowsoft %s %s answered %d; retry %d/%d in %.1f s", self.call.method,
                        self.call.path, answer.status, self.number, self.policy.max_retries, wait)
            return self._retry_wait(wait)
        return DONE


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def answer_error(call: Call, answer: Answer, message: str, credentials_of: str = "") -> WorkflowsoftError:
    """Return the error for an error answer.

    A create answered 500/502/504 may have been acted on; 401/403 say whose credentials were refused
    (``credentials_of``, the client's ``ClientConfig.label``).
    """
    if call.creates and answer.status in (500, 502, 504):
        return WorkflowsoftUnknownOutcomeError(call.method, call.path, f"HTTP {answer.status}: {message}")
    return status_error(answer.status, call.method, call.path, message, credentials_of)


def mint_error(call: Call, answer: Answer, message: str, credentials_of: str = "") -> WorkflowsoftError:
    """Return the error for a refused token request; 401/403 name the administrator credentials (and whose)."""
    if answer.status in (401, 403):
        return WorkflowsoftAuthError(
            answer.status, call.method, call.path,
            f"the administrator login or password was refused ({message or 'no message'})", credentials_of,
        )
    return status_error(answer.status, call.method, call.path, message, credentials_of)


def decode_answer(call: Call, answer: Answer, redact_text: Callable[[str], str], credentials_of: str = "") -> Any:
    """Return the decoded JSON of a final answer (``None`` for 204 or an empty body), or its error."""
    if answer.status >= 400:
        raise answer_error(call, answer, redact_text(extract_message(answer.text, answer.content_type)),
                           credentials_of)
    if answer.status == 204:
        return None
    return decode_json(answer.text, answer.content_type, call.method, call.path)


def has_title(items: list[dict[str, Any]], name: str) -> bool:
    """Whether one of ``items`` is titled ``name`` (case-insensitive, as :func:`one_by_title` compares)."""
    folded = str(name).strip().casefold()
    return any(str(item.get("Title", "")).strip().casefold() == folded for item in items)


#: Where a process diagram is looked for when the server's search by its name finds no diagram of that title
#: (a misspelt name): among every diagram, which gives the suggestion something to suggest.
ALL_DIAGRAMS = "among the process diagrams"


def one_by_title(items: list[dict[str, Any]], name: str, what: str, where: str) -> dict[str, Any]:
    """Return the one item titled ``name`` (case-insensitive), else a lookup error naming what was found."""
    if not isinstance(name, str) or not name.strip():
        raise WorkflowsoftLookupError(f"Cannot look up a {what}: the name {name!r} is empty")
    folded = name.strip().casefold()
    matches = [item for item in items if str(item.get("Title", "")).strip().casefold() == folded]
    if len(matches) == 1:
        return matches[0]
    titles = ", ".join(f"{i.get('Title')!r} (Id {i.get('Id')})" for i in items[:20]) or "none"
    if not matches:
        hint = did_you_mean(name.strip(), [str(i.get("Title", "")) for i in items])
        raise WorkflowsoftLookupError(f"No {what} titled {name!r} {where}; found: {titles}{hint}", items)
    raise WorkflowsoftLookupError(
        f"{len(matches)} {what}s are titled {name!r} {where}; use the id instead: {titles}", matches
    )
