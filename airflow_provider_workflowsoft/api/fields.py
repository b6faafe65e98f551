"""The typed field model of an integration instance: parsing ``valueJson``, resolving names, validating writes.

Pure code, no I/O and no Airflow: the client, the hook, the operators and the emulator's tests share it.

* Reading: :func:`parse_fields` turns the server's field list into :class:`Field` objects whose
  ``value`` is a Python value chosen by the field's ``type`` (String -> ``str``, Boolean -> ``bool``,
  DateTime -> timezone-aware ``datetime``, Decimal -> ``decimal.Decimal`` (never through ``float``),
  integer types -> ``int``, unknown types -> the JSON value unchanged). A ``?`` type allows ``None``.
* Writing: :func:`prepare_update` resolves each name given by the user (label, key, or the
  ``field_<key with _>`` form of the page), converts each value to what goes on the wire and checks it
  against the field (read-only, type, options). Every problem is collected and raised at once in one
  :class:`~airflow_provider_workflowsoft.api.errors.WorkflowsoftValidationError`, before anything is sent.
* XCom: :func:`to_jsonable` makes values JSON-safe without losing anything: datetimes become ISO 8601
  UTC strings ending in ``Z``, decimals become strings of their exact digits. Both are accepted back by
  :func:`prepare_update`, so a sensor's XCom can be written back as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_provider_workflowsoft.api.errors import WorkflowsoftResponseError, WorkflowsoftValidationError

#: A valueJson longer than this is refused as malformed rather than parsed (protects workers' memory).
MAX_VALUE_JSON_CHARS = 1_000_000

FIELD_PARAM_PREFIX = "field_"

_STRING_TYPES = {"string", "text", "str", "email", "url", "phone", "richtext", "html", "memo"}
_BOOLEAN_TYPES = {"boolean", "bool"}
_DATETIME_TYPES = {"datetime", "date", "datetimeoffset", "time"}
_DECIMAL_TYPES = {"decimal", "double", "float", "single", "number", "money", "currency", "numeric"}
_INTEGER_TYPES = {"int", "int16", "int32", "int64", "integer", "long", "short", "byte"}


def param_key(key: str) -> str:
    """Return the page's name of a field in an update body: ``9aae87b4-...`` -> ``field_9aae87b4_...``."""
    return FIELD_PARAM_PREFIX + key.replace("-", "_")


def key_from_param(name: str) -> str:
    """Return the inverse of :func:`param_key` for uuid keys (which contain no ``_`` of their own)."""
    if not name.startswith(FIELD_PARAM_PREFIX):
        raise ValueError(f"{name!r} does not start with {FIELD_PARAM_PREFIX!r}")
    return name[len(FIELD_PARAM_PREFIX) :].replace("_", "-")


def _lookup(data: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """``data[name]`` for the first of ``names`` present, compared case-insensitively (liberal reading)."""
    for name in names:
        if name in data:
            return data[name]
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return default


def split_type(type_name: str | None) -> tuple[str, bool]:
    """``"Decimal?"`` -> (``"decimal"``, nullable True). Also reads ``Nullable<Decimal>``."""
    text = (type_name or "").strip()
    nullable = False
    match = re.fullmatch(r"(?i)nullable\s*<\s*(.+?)\s*>", text)
    if match:
        text, nullable = match.group(1), True
    if text.endswith("?"):
        text, nullable = text[:-1], True
    base = text.strip().lower()
    if base.startswith("system."):
        base = base[len("system.") :]
    return base, nullable


def _kind(base: str) -> str:
    if base in _STRING_TYPES:
        return "string"
    if base in _BOOLEAN_TYPES:
        return "boolean"
    if base in _DATETIME_TYPES:
        return "datetime"
    if base in _DECIMAL_TYPES:
        return "decimal"
    if base in _INTEGER_TYPES:
        return "integer"
    return "unknown"


def _normalise_options(raw: Any) -> list[Any] | None:
    """Options as a list of allowed values.

    Accepts a list of scalars, a list of objects (every scalar of an object is an allowed spelling), or the same as a
    JSON text. ``None``/empty -> no restriction.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, Mapping):
        raw = list(raw.values())
    if not isinstance(raw, list) or not raw:
        return None
    return list(raw)


def _allowed_values(options: list[Any]) -> list[Any]:
    allowed: list[Any] = []
    for option in options:
        if isinstance(option, Mapping):
            allowed.extend(v for v in option.values() if isinstance(v, str | int | float | bool))
        else:
            allowed.append(option)
    return allowed


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of an integration instance, with its value parsed by type."""

    label: str
    key: str
    type: str
    options: list[Any] | None
    value: Any
    value_json: str | None
    is_readonly: bool
    is_required: bool

    @property
    def param_key(self) -> str:
        """The name of this field in an update body (``field_<key with _>``)."""
        return param_key(self.key)

    @property
    def kind(self) -> str:
        """``string``, ``boolean``, ``datetime``, ``decimal``, ``integer`` or ``unknown``."""
        return _kind(split_type(self.type)[0])

    @property
    def nullable(self) -> bool:
        """True when the type allows an empty value (``?`` types; unknown types are not checked)."""
        return split_type(self.type)[1] or self.kind == "unknown"

    @property
    def is_empty(self) -> bool:
        """No value, for the page's "required field is empty" rule."""
        return is_empty_value(self.value)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict of this field (value made JSON-safe with :func:`to_jsonable`)."""
        return {
            "label": self.label,
            "key": self.key,
            "type": self.type,
            "options": self.options,
            "value": to_jsonable(self.value),
            "value_json": self.value_json,
            "is_readonly": self.is_readonly,
            "is_required": self.is_required,
        }


def is_empty_value(value: Any) -> bool:
    """None, an empty or blank string, or an empty list/dict."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _where(label: str, instance_id: Any) -> str:
    suffix = f" of integration instance {instance_id}" if instance_id is not None else ""
    return f"field {label!r}{suffix}"


def parse_value_json(value_json: Any, type_name: str, *, label: str = "?", instance_id: Any = None) -> Any:
    """Parse one ``valueJson`` by its field type. Raises a clear error naming the field and instance."""
    if value_json is None:
        return None
    if isinstance(value_json, str):
        if len(value_json) > MAX_VALUE_JSON_CHARS:
            raise WorkflowsoftResponseError(
                f"valueJson of {_where(label, instance_id)} is {len(value_json)} characters long, over "
                f"the limit of {MAX_VALUE_JSON_CHARS}; refusing to parse it"
            )
        if not value_json.strip():
            return None
        try:
            raw = json.loads(value_json, parse_float=Decimal, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            shown = value_json if len(value_json) <= 80 else value_json[:77] + "..."
            raise WorkflowsoftResponseError(
                f"valueJson of {_where(label, instance_id)} is not valid JSON ({exc}): {shown!r}"
            ) from None
    else:  # a server that sends the value already parsed: take it as it is
        raw = Decimal(repr(value_json)) if isinstance(value_json, float) else value_json
    return _typed_read(raw, type_name, label=label, instance_id=instance_id)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _typed_read(raw: Any, type_name: str, *, label: str, instance_id: Any) -> Any:
    if raw is None:
        return None
    kind = _kind(split_type(type_name)[0])
    try:
        if kind == "string":
            return raw if isinstance(raw, str) else json.dumps(raw, default=str)
        if kind == "boolean":
            return _to_bool(raw)
        if kind == "datetime":
            if isinstance(raw, str) and not raw.strip():
                return None
            return _to_datetime(raw, naive_as_utc=True)
        if kind == "decimal":
            if isinstance(raw, str) and not raw.strip():
                return None
            return _to_decimal(raw)
        if kind == "integer":
            if isinstance(raw, str) and not raw.strip():
                return None
            return _to_int(raw)
    except (TypeError, ValueError) as exc:
        raise WorkflowsoftResponseError(
            f"valueJson of {_where(label, instance_id)} does not fit its type {type_name!r}: {exc}"
        ) from None
    return raw


def parse_field(data: Mapping[str, Any], *, instance_id: Any = None) -> Field:
    """One field object of the server (keys read case-insensitively) -> :class:`Field`."""
    if not isinstance(data, Mapping):
        raise WorkflowsoftResponseError(
            f"expected a field object for integration instance {instance_id}, got {type(data).__name__}"
        )
    label = str(_lookup(data, "label", "title", "name", default="") or "")
    key = str(_lookup(data, "key", "id", default="") or "")
    type_name = str(_lookup(data, "type", default="") or "")
    value_json = _lookup(data, "valueJson", "value_json", default=None)
    if value_json is None and "value" in {str(k).lower() for k in data}:
        value_json = _lookup(data, "value")
        if value_json is not None and not isinstance(value_json, str):
            value_json = json.dumps(value_json, default=str)
        elif isinstance(value_json, str) and _kind(split_type(type_name)[0]) == "string":
            value_json = json.dumps(value_json)
    value = parse_value_json(value_json, type_name, label=label or key, instance_id=instance_id)
    return Field(
        label=label,
        key=key,
        type=type_name,
        options=_normalise_options(_lookup(data, "options")),
        value=value,
        value_json=value_json if isinstance(value_json, str) or value_json is None else str(value_json),
        is_readonly=_to_bool(_lookup(data, "isReadonly", "isReadOnly", "readonly", default=False) or False),
        is_required=_to_bool(_lookup(data, "isRequired", "required", default=False) or False),
    )


def parse_fields(data: Any, *, instance_id: Any = None) -> list[Field]:
    """Return the server's field list (or an object wrapping it) -> list of :class:`Field`."""
    if isinstance(data, Mapping):
        inner = _lookup(data, "fields", "variables", "items", "data", default=None)
        data = inner if isinstance(inner, list) else data
    if data is None:
        return []
    if not isinstance(data, list):
        raise WorkflowsoftResponseError(
            f"expected a list of fields for integration instance {instance_id}, got {type(data).__name__}"
        )
    return [parse_field(item, instance_id=instance_id) for item in data]


def field_values(fields: Iterable[Field]) -> dict[str, Any]:
    """``{label: value}``. A label used twice keeps the first; the next ones get ``"label (key)"``."""
    values: dict[str, Any] = {}
    for field in fields:
        name = field.label or field.key
        if name in values:
            name = f"{name} ({field.key})"
        values[name] = field.value
    return values


# ---------------------------------------------------------------------------------------------------
# Conversions shared by reading and writing
# ---------------------------------------------------------------------------------------------------


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    if isinstance(raw, int | Decimal) and raw in (0, 1):
        return bool(raw)
    raise ValueError(f"{raw!r} is not a boolean")


def _to_datetime(raw: Any, *, naive_as_utc: bool) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        value = raw
    elif isinstance(raw, dt.date):
        value = dt.datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        text = raw.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not an ISO 8601 date-time") from None
    else:
        raise TypeError(f"{raw!r} ({type(raw).__name__}) is not a date-time")
    if value.tzinfo is None or value.utcoffset() is None:
        if not naive_as_utc and not (isinstance(raw, dt.date) and not isinstance(raw, dt.datetime)):
            raise ValueError(f"{raw!r} has no time zone; give one (for example tzinfo=timezone.utc or 'Z')")
        value = value.replace(tzinfo=dt.UTC)
    return value


def _to_decimal(raw: Any) -> Decimal:
    if isinstance(raw, bool):
        raise TypeError(f"{raw!r} is a boolean, not a number")
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        # repr() is the shortest text that round-trips: 0.1 stays 0.1, not 0.1000000000000000055...
        value = Decimal(repr(raw))
    elif isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            raise ValueError(f"{raw!r} is not a number") from None
    else:
        raise TypeError(f"{raw!r} ({type(raw).__name__}) is not a number")
    if not value.is_finite():
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise TypeError(f"{raw!r} is a boolean, not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError(f"{raw!r} is not a finite number")
    number = _to_decimal(raw)
    if number != number.to_integral_value():
        raise ValueError(f"{raw!r} is not a whole number")
    return int(number)


def format_datetime(value: dt.datetime) -> str:
    """ISO 8601 in UTC with ``Z``, microseconds only when present."""
    utc = value.astimezone(dt.UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def to_jsonable(value: Any) -> Any:
    """Return a JSON-safe copy of a field value.

    Datetimes -> ISO 8601 UTC ``Z`` strings, Decimals -> exact strings (``Decimal("1640.10")`` -> ``"1640.10"``),
    recursing into lists and dicts.
    """
    if isinstance(value, dt.datetime):
        return format_datetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def to_wire_json(value: Any) -> Any:
    """Return a JSON-safe copy like :func:`to_jsonable`, but with Decimals (at any depth) kept.

    The request body then writes them as JSON numbers digit for digit instead of strings.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_wire_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire_json(v) for v in value]
    return to_jsonable(value)


def to_wire(value: Any, field: Field) -> Any:
    """Return the JSON value to send for ``value`` in ``field``.

    Decimals stay Decimals: the client writes them as JSON numbers digit for digit. Raises ``ValueError``/``TypeError``
    with the reason.
    """
    if value is None or (isinstance(value, str) and not value.strip() and field.kind not in ("string", "unknown")):
        if not field.nullable:
            raise ValueError(f"the type {field.type!r} does not allow an empty value")
        return None
    kind = field.kind
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"{value!r} ({type(value).__name__}) is not a string")
        wire: Any = value
    elif kind == "boolean":
        wire = _to_bool(value) if isinstance(value, bool | str) else _refuse(value, "a boolean")
    elif kind == "datetime":
        wire = format_datetime(_to_datetime(value, naive_as_utc=False))
    elif kind == "decimal":
        wire = _to_decimal(value)
    elif kind == "integer":
        wire = _to_int(value)
    else:
        try:
            json.dumps(to_jsonable(value))
        except (TypeError, ValueError):
            raise TypeError(f"{value!r} ({type(value).__name__}) cannot be written as JSON") from None
        wire = to_wire_json(value)
    if field.options:
        allowed = _allowed_values(field.options)
        if not any(_same_option(wire, option) for option in allowed):
            raise ValueError(f"{value!r} is not one of the options {allowed!r}")
    return wire


def _refuse(value: Any, what: str) -> Any:
    raise TypeError(f"{value!r} ({type(value).__name__}) is not {what}")


def _same_option(wire: Any, option: Any) -> bool:
    if isinstance(wire, Decimal) and isinstance(option, int | float | Decimal) and not isinstance(option, bool):
        return wire == _to_decimal(option)
    return bool(wire == option and type(wire) is type(option)) or (
        isinstance(wire, str) and isinstance(option, str) and wire == option
    )


def resolve_field(name: str, fields: list[Field]) -> Field | None:
    """Return the field ``name`` designates.

    Its label, key or ``field_`` form (exact first, then label case-insensitively when that picks exactly one field).
    """
    for field in fields:
        if name == field.label:
            return field
    for field in fields:
        if name == field.key or name == field.param_key:
            return field
    folded = name.strip().casefold()
    matches = [f for f in fields if f.label.strip().casefold() == folded or f.key.casefold() == folded]
    return matches[0] if len(matches) == 1 else None


def did_you_mean(name: str, known: list[str]) -> str:
    """``"; did you mean 'X'?"`` for the known name closest to a wrong one, or ``""``.

    The one suggestion rule (field labels, process diagram and integration step titles).
    """
    import difflib  # only when a name is wrong: keeps DAG-file imports light

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if not close:  # the same name in another case (the lookups compare case-insensitively)
        folded = {k.casefold(): k for k in known}
        close = [folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.5)]
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_field_message(name: str, fields: list[Field]) -> str:
    labels = [f.label for f in fields]
    hint = did_you_mean(name, labels)
    return f"{name!r}: no such field{hint} Known labels: {', '.join(repr(label) for label in labels)}"


def prepare_update(
    fields: list[Field], values: Mapping[str, Any], *, instance_id: Any = None
) -> dict[str, Any]:
    """Check ``values`` (names -> Python values) against ``fields``; return the update body's ``Fields``.

    The map is ``field_<key>`` -> wire value. Every problem is collected into one :class:`WorkflowsoftValidationError`;
    nothing is returned unless everything is valid.
    """
    if not isinstance(values, Mapping):
        raise WorkflowsoftValidationError(
            f"field values must be a mapping of label/key -> value, got {type(values).__name__}",
            [f"values: {type(values).__name__} is not a mapping"],
        )
    problems: list[str] = []
    body: dict[str, Any] = {}
    given_by: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{name!r}: field names must be non-empty strings")
            continue
        field = resolve_field(name, fields)
        if field is None:
            problems.append(_unknown_field_message(name, fields))
            continue
        if field.param_key in given_by:
            problems.append(f"{name!r}: the same field as {given_by[field.param_key]!r} ({field.label!r})")
            continue
        given_by[field.param_key] = name
        if field.is_readonly:
            problems.append(f"{field.label!r}: the field is read-only (value {_short(value)})")
            continue
        try:
            body[field.param_key] = to_wire(value, field)
        except (TypeError, ValueError) as exc:
            problems.append(f"{field.label!r} ({field.type}): value {_short(value)} refused: {exc}")
    if problems:
        where = f" for integration instance {instance_id}" if instance_id is not None else ""
        raise WorkflowsoftValidationError(
            f"{len(problems)} problem(s) with the field values{where}, nothing was sent:\n- "
            + "\n- ".join(problems),
            problems,
        )
    return body


def empty_required(fields: list[Field], pending: Mapping[str, Any] | None = None) -> list[str]:
    """Labels of required fields still empty once ``pending`` (``field_<key>`` -> wire value) is applied."""
    pending = pending or {}
    missing = []
    for field in fields:
        if not field.is_required:
            continue
        value = pending.get(field.param_key, field.value)
        if is_empty_value(value):
            missing.append(field.label or field.key)
    return missing


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def required_error(instance_id: Any, missing: list[str]) -> WorkflowsoftValidationError:
    """Return the error that refuses a completion while required fields are empty (nothing was sent)."""
    problems = [f"{label!r}: the field is required and empty" for label in missing]
    return WorkflowsoftValidationError(
        f"Cannot complete integration instance {instance_id}: required field(s) empty: "
        + ", ".join(repr(m) for m in missing)
        + ". Nothing was sent.",
        problems,
    )
