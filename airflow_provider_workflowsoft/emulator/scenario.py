"""Scenario model for the Workflowsoft emulator: loading, validation and field value rules.

A scenario describes what the emulated Workflowsoft tenant contains (admin credentials, static API
tokens, users, process diagrams with their integration steps and field schemas, and optionally
pre-seeded pending integration instances). This module also owns the per-type value rules used by
both the scenario defaults and the ``POST /api/v2/workflows/instances/variables`` endpoint, so the
two can never disagree.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_SCENARIO_PATH = Path(__file__).with_name("demo_scenario.json")

#: Field base types understood by the emulator; each may carry a trailing ``?`` (nullable).
SUPPORTED_BASE_TYPES = ("String", "Boolean", "DateTime", "Date", "Decimal", "Double", "Int32", "Int64")

_INT_RANGES = {"Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1)}
_INT_TEXT = re.compile(r"^\s*[-+]?\d+\s*$")


class ScenarioError(ValueError):
    """Raised when a scenario file or mapping is invalid; the message names the bad entry."""


class FieldValueError(ValueError):
    """Raised when a value does not fit a field's type or options."""


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; Workflowsoft would refuse them, so the emulator does too.
    raise ValueError(f"invalid JSON constant {name}")


def json_loads(text: str | bytes) -> Any:
    """Parse JSON keeping every non-integer number as an exact ``decimal.Decimal``."""
    return json.loads(text, parse_float=decimal.Decimal, parse_constant=_reject_constant)


def decimal_text(value: decimal.Decimal) -> str:
    """JSON text of a finite Decimal, exactly as written (``1640.0`` stays ``1640.0``)."""
    if not value.is_finite():
        raise ValueError("non-finite number")
    return str(value)


def json_dumps(obj: Any, indent: int | None = None) -> str:
    """``json.dumps`` that writes ``Decimal`` values as their exact text instead of floats.

    The stdlib encoder cannot emit a number verbatim and converting to float would lose the
    exact text a client sent (``1640.0`` would survive, ``0.1000`` would not), hence this small
    recursive encoder.
    """
    return _encode(obj, indent, 0)


def _encode(value: Any, indent: int | None, level: int) -> str:
    if isinstance(value, decimal.Decimal):
        return decimal_text(value)
    if isinstance(value, Mapping):
        items = [(json.dumps(str(k), ensure_ascii=False), v) for k, v in value.items()]
        parts = [f"{k}: {_encode(v, indent, level + 1)}" for k, v in items]
        return _wrap("{", "}", parts, indent, level)
    if isinstance(value, list | tuple):
        return _wrap("[", "]", [_encode(v, indent, level + 1) for v in value], indent, level)
    return json.dumps(value, ensure_ascii=False)


def _wrap(open_: str, close: str, parts: list[str], indent: int | None, level: int) -> str:
    if not parts:
        return open_ + close
    if indent is None:
        return open_ + ", ".join(parts) + close
    inner = "\n" + " " * (indent * (level + 1))
    return open_ + inner + ("," + inner).join(parts) + "\n" + " " * (indent * level) + close


@dataclass(frozen=True)
class FieldSpec:
    """Schema of one field of an integration step."""

    label: str
    type: str
    key: str
    options: tuple[str, ...] | None = None
    is_readonly: bool = False
    is_required: bool = False
    default_json: str = "null"

    @property
    def base_type(self) -> str:
        return self.type.rstrip("?")

    @property
    def nullable(self) -> bool:
        return self.type.endswith("?")

    @property
    def api_name(self) -> str:
        """Name of the field in a ``Fields`` update body: ``field_`` + key with ``-`` -> ``_``."""
        return "field_" + self.key.replace("-", "_")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "key": self.key,
            "options": list(self.options) if self.options is not None else None,
            "isReadonly": self.is_readonly,
            "isRequired": self.is_required,
            "default": json_loads(self.default_json),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldSpec:
        options = data.get("options")
        spec = cls(
            label=data["label"],
            type=data["type"],
            key=data["key"],
            options=tuple(options) if options is not None else None,
            is_readonly=bool(data.get("isReadonly", False)),
            is_required=bool(data.get("isRequired", False)),
        )
        return spec.with_default(data.get("default"))

    def with_default(self, value: Any) -> FieldSpec:
        text = value_to_json(self, value, allow_null=True)
        return FieldSpec(self.label, self.type, self.key, self.options, self.is_readonly, self.is_required, text)


@dataclass(frozen=True)
class StepSpec:
    """An integration step (IntegrationDiagramID) of a process diagram."""

    id: int
    title: str
    fields: tuple[FieldSpec, ...]
    #: when a started process reaches this step: ``"at-start"`` (its instance is created with the process),
    #: a number of seconds after the start, or ``"admin-call"`` (``POST /_emulator/processes/<id>/reach``)
    reached: str | float = "at-start"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"Id": self.id, "Title": self.title, "fields": [f.to_dict() for f in self.fields]}
        if self.reached != "at-start":
            data["reached"] = self.reached
        return data


#: The ``reached`` texts of a step (a number of seconds is the third choice).
REACHED_CHOICES = ("at-start", "admin-call")


@dataclass(frozen=True)
class DiagramSpec:
    """A process diagram (ProcessDiagramID)."""

    id: int
    title: str
    steps: tuple[StepSpec, ...]


@dataclass(frozen=True)
class UserSpec:
    """A user of the scenario: id, full name, email."""

    id: int
    full_name: str
    email: str

    def to_api(self) -> dict[str, Any]:
        return {"Id": self.id, "FullName": self.full_name, "Email": self.email}


@dataclass(frozen=True)
class SeedInstance:
    """A pending integration instance present when the emulator starts or is reset."""

    integration_step_id: int
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; build it with :func:`load_scenario`."""

    admin_login: str
    admin_password: str
    api_tokens: tuple[str, ...]
    users: tuple[UserSpec, ...]
    diagrams: tuple[DiagramSpec, ...]
    instances: tuple[SeedInstance, ...] = ()
    source: str = "<dict>"

    def diagram(self, diagram_id: int) -> DiagramSpec | None:
        return next((d for d in self.diagrams if d.id == diagram_id), None)

    def step(self, step_id: int) -> tuple[DiagramSpec, StepSpec] | None:
        for diagram in self.diagrams:
            for step in diagram.steps:
                if step.id == step_id:
                    return diagram, step
        return None

    def user(self, user_id: int) -> UserSpec | None:
        return next((u for u in self.users if u.id == user_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "admin": {"login": self.admin_login, "password": self.admin_password},
            "api_tokens": list(self.api_tokens),
            "users": [u.to_api() for u in self.users],
            "process_diagrams": [
                {
                    "Id": d.id,
                    "Title": d.title,
                    "integration_steps": [s.to_dict() for s in d.steps],
                }
                for d in self.diagrams
            ],
            "instances": [
                {"integration_step_id": i.integration_step_id, "values": dict(i.values)} for i in self.instances
            ],
        }


# --------------------------------------------------------------------------- field values


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | decimal.Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _to_decimal(value: Any) -> decimal.Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, decimal.Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, float):
        # repr() is the shortest text that round-trips, i.e. what a JSON client would have sent.
        return decimal.Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _is_iso_datetime(text: str, date_only: bool) -> bool:
    try:
        if date_only:
            datetime.date.fromisoformat(text)
        else:
            datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def value_to_json(spec: FieldSpec, value: Any, *, allow_null: bool = False) -> str:
    """Check ``value`` against the field's type/options and return its ``valueJson`` text.

    ``allow_null`` is used for defaults and admin-seeded values: a non-nullable field may start
    empty (that is what makes a required field block completion), but an API client may not
    write null into it.
    """
    label, ftype, base = spec.label, spec.type, spec.base_type
    if value is None:
        if spec.nullable or allow_null:
            return "null"
        raise FieldValueError(f"Field '{label}' ({ftype}) does not accept null")
    bad = FieldValueError(f"Field '{label}' ({ftype}) does not accept a {_type_name(value)} value: {value!r}")
    if base == "String":
        if not isinstance(value, str):
            raise bad
        text = json.dumps(value, ensure_ascii=False)
    elif base == "Boolean":
        if not isinstance(value, bool):
            raise bad
        text = "true" if value else "false"
    elif base in ("DateTime", "Date"):
        if not isinstance(value, str) or not _is_iso_datetime(value, base == "Date"):
            kind = "an ISO-8601 date" if base == "Date" else "an ISO-8601 date-time"
            raise FieldValueError(f"Field '{label}' ({ftype}) expects {kind} string, got {value!r}")
        text = json.dumps(value)
    elif base in ("Decimal", "Double"):
        number = _to_decimal(value)
        if number is None:
            raise bad
        text = decimal_text(number)
    elif base in _INT_RANGES:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str) and _INT_TEXT.match(value):
            value = int(value)
        if not isinstance(value, int):
            raise bad
        low, high = _INT_RANGES[base]
        if not low <= value <= high:
            raise FieldValueError(f"Field '{label}' ({ftype}) value {value} is out of range")
        text = str(value)
    else:  # pragma: no cover - types are validated when the scenario is loaded
        raise FieldValueError(f"Field '{label}' has unsupported type {ftype}")
    if spec.options is not None and value not in spec.options:
        raise FieldValueError(
            f"Field '{label}' value {value!r} is not one of the allowed options: {', '.join(spec.options)}"
        )
    return text


def is_empty_json(value_json: str | None) -> bool:
    """Whether a stored value counts as empty for the required-field check on completion."""
    return value_json is None or value_json.strip() in ("", "null", '""')


# --------------------------------------------------------------------------- loading


def _check_keys(where: str, data: Mapping[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    missing = sorted(required - set(data))
    if missing:
        raise ScenarioError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def _expect_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: expected an integer, got {value!r}")
    return value


def _expect_str(where: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ScenarioError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _expect_list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list, got {_type_name(value)}")
    return value


def _expect_mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where}: expected an object, got {_type_name(value)}")
    return value


def _parse_field(where: str, raw: Any) -> FieldSpec:
    data = _expect_mapping(where, raw)
    _check_keys(
        where,
        data,
        {"label", "type", "key", "options", "isReadonly", "isRequired", "default"},
        {"label", "type", "key"},
    )
    label = _expect_str(f"{where}.label", data["label"])
    where = f"{where} ({label!r})"
    ftype = _expect_str(f"{where}.type", data["type"])
    if ftype.rstrip("?") not in SUPPORTED_BASE_TYPES or ftype.count("?") > 1:
        raise ScenarioError(
            f"{where}.type: unsupported type {ftype!r} (supported: {', '.join(SUPPORTED_BASE_TYPES)},"
            " optionally followed by '?')"
        )
    key = _expect_str(f"{where}.key", data["key"])
    options = data.get("options")
    if options is not None:
        options = _expect_list(f"{where}.options", options)
        if not all(isinstance(o, str) for o in options):
            raise ScenarioError(f"{where}.options: expected a list of strings")
    flags = {}
    for flag in ("isReadonly", "isRequired"):
        flag_value = data.get(flag, False)
        if not isinstance(flag_value, bool):
            raise ScenarioError(f"{where}.{flag}: expected true/false, got {flag_value!r}")
        flags[flag] = flag_value
    spec = FieldSpec(
        label=label,
        type=ftype,
        key=key,
        options=tuple(options) if options is not None else None,
        is_readonly=flags["isReadonly"],
        is_required=flags["isRequired"],
    )
    try:
        return spec.with_default(data.get("default"))
    except FieldValueError as exc:
        raise ScenarioError(f"{where}.default: {exc}") from None


def _parse_step(where: str, raw: Any) -> StepSpec:
    data = _expect_mapping(where, raw)
    _check_keys(where, data, {"Id", "Title", "fields", "reached"}, {"Id", "Title"})
    step_id = _expect_int(f"{where}.Id", data["Id"])
    title = _expect_str(f"{where}.Title", data["Title"])
    where = f"{where} (Id {step_id})"
    reached = data.get("reached", "at-start")
    if isinstance(reached, bool) or not (
        reached in REACHED_CHOICES or (isinstance(reached, int | float | decimal.Decimal) and 0 <= reached < 1e9)
    ):
        raise ScenarioError(f"{where}.reached: {', '.join(map(repr, REACHED_CHOICES))} or a number of seconds "
                            f"(0 or more), got {reached!r}")
    if not isinstance(reached, str):
        reached = float(reached)
    fields: list[FieldSpec] = []
    for index, raw_field in enumerate(_expect_list(f"{where}.fields", data.get("fields", []))):
        spec = _parse_field(f"{where}.fields[{index}]", raw_field)
        for other in fields:
            if other.label == spec.label:
                raise ScenarioError(f"{where}.fields[{index}]: duplicate label {spec.label!r}")
            if other.api_name == spec.api_name:
                raise ScenarioError(f"{where}.fields[{index}]: duplicate key {spec.key!r}")
        fields.append(spec)
    return StepSpec(step_id, title, tuple(fields), reached)


def resolve_field(step: StepSpec, name: str) -> FieldSpec | None:
    """Find a field by label, key or ``field_<key>`` API name (used by seeding helpers)."""
    for spec in step.fields:
        if name in (spec.label, spec.key, spec.api_name):
            return spec
    return None


def seed_values(step: StepSpec, values: Mapping[str, Any], *, where: str = "values") -> dict[str, str]:
    """Turn ``{label|key|field_key: value}`` into ``{key: valueJson}`` over the step defaults."""
    result = {spec.key: spec.default_json for spec in step.fields}
    for name, value in values.items():
        spec = resolve_field(step, name)
        if spec is None:
            known = ", ".join(repr(f.label) for f in step.fields) or "none"
            raise FieldValueError(f"{where}: step {step.id} ({step.title!r}) has no field {name!r} (fields: {known})")
        result[spec.key] = value_to_json(spec, value, allow_null=True)
    return result


def parse_scenario(raw: Any, source: str = "<dict>") -> Scenario:
    """Validate a scenario mapping and build a :class:`Scenario`."""
    data = _expect_mapping("scenario", raw)
    _check_keys(
        "scenario",
        data,
        {"name", "description", "admin", "api_tokens", "users", "process_diagrams", "instances"},
        set(),
    )
    admin = _expect_mapping("admin", data.get("admin", {}))
    _check_keys("admin", admin, {"login", "password"}, set())
    login = _expect_str("admin.login", admin.get("login", "admin@example.com"))
    password = _expect_str("admin.password", admin.get("password", "admin-password"))
    tokens = tuple(
        _expect_str(f"api_tokens[{i}]", t) for i, t in enumerate(_expect_list("api_tokens", data.get("api_tokens", [])))
    )
    users: list[UserSpec] = []
    for index, raw_user in enumerate(_expect_list("users", data.get("users", []))):
        where = f"users[{index}]"
        udata = _expect_mapping(where, raw_user)
        _check_keys(where, udata, {"Id", "FullName", "Email"}, {"Id", "FullName", "Email"})
        user = UserSpec(
            _expect_int(f"{where}.Id", udata["Id"]),
            _expect_str(f"{where}.FullName", udata["FullName"]),
            _expect_str(f"{where}.Email", udata["Email"]),
        )
        if any(u.id == user.id for u in users):
            raise ScenarioError(f"{where}: duplicate user Id {user.id}")
        users.append(user)
    diagrams: list[DiagramSpec] = []
    step_ids: set[int] = set()
    for index, raw_diagram in enumerate(_expect_list("process_diagrams", data.get("process_diagrams", []))):
        where = f"process_diagrams[{index}]"
        ddata = _expect_mapping(where, raw_diagram)
        _check_keys(where, ddata, {"Id", "Title", "integration_steps"}, {"Id", "Title"})
        diagram_id = _expect_int(f"{where}.Id", ddata["Id"])
        if any(d.id == diagram_id for d in diagrams):
            raise ScenarioError(f"{where}: duplicate process diagram Id {diagram_id}")
        title = _expect_str(f"{where}.Title", ddata["Title"])
        steps = []
        raw_steps = _expect_list(f"{where}.integration_steps", ddata.get("integration_steps", []))
        for step_index, raw_step in enumerate(raw_steps):
            step = _parse_step(f"{where}.integration_steps[{step_index}]", raw_step)
            if step.id in step_ids:
                raise ScenarioError(f"{where}.integration_steps[{step_index}]: duplicate integration step Id {step.id}")
            step_ids.add(step.id)
            steps.append(step)
        diagrams.append(DiagramSpec(diagram_id, title, tuple(steps)))
    scenario = Scenario(login, password, tokens, tuple(users), tuple(diagrams), source=source)
    seeds: list[SeedInstance] = []
    for index, raw_seed in enumerate(_expect_list("instances", data.get("instances", []))):
        where = f"instances[{index}]"
        sdata = _expect_mapping(where, raw_seed)
        _check_keys(where, sdata, {"integration_step_id", "values"}, {"integration_step_id"})
        step_id = _expect_int(f"{where}.integration_step_id", sdata["integration_step_id"])
        found = scenario.step(step_id)
        if found is None:
            raise ScenarioError(f"{where}.integration_step_id: unknown integration step {step_id}")
        values = dict(_expect_mapping(f"{where}.values", sdata.get("values", {})))
        try:
            seed_values(found[1], values, where=f"{where}.values")
        except FieldValueError as exc:
            raise ScenarioError(str(exc)) from None
        seeds.append(SeedInstance(step_id, values))
    return Scenario(login, password, tokens, tuple(users), tuple(diagrams), tuple(seeds), source)


def load_scenario(source: Scenario | Mapping[str, Any] | str | Path | None = None) -> Scenario:
    """Load and validate a scenario.

    ``source`` may be ``None`` (the built-in demo scenario), a path to a ``.json`` /
    ``.yaml`` / ``.yml`` file, an already-parsed mapping, or a :class:`Scenario`.
    Raises :class:`ScenarioError` with a message naming the offending entry.
    """
    if isinstance(source, Scenario):
        return source
    if source is not None and not isinstance(source, str | Path):
        return parse_scenario(source)  # a mapping, or anything else, which gets a clear error
    path = DEMO_SCENARIO_PATH if source is None else Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {str(path)!r}: {exc.strerror or exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - depends on the environment
            raise ScenarioError("YAML scenarios need PyYAML installed (pip install pyyaml)") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path.name}: invalid YAML: {exc}") from None
    else:
        try:
            raw = json_loads(text)
        except ValueError as exc:
            raise ScenarioError(f"{path.name}: invalid JSON: {exc}") from None
    try:
        return parse_scenario(raw, source="built-in demo" if source is None else str(path))
    except ScenarioError as exc:
        raise ScenarioError(f"{path.name}: {exc}") from None
