"""In-memory state machine of the Workflowsoft emulator (no HTTP here).

Holds integration instances, process instances, tasks, tokens, the request logs, the behaviour
switches (settings) and the fault-injection configuration. Every public method takes the single
lock, so the HTTP layer can call it from many threads; everything is unit-testable directly.
API-level failures are raised as :class:`ApiError` carrying the HTTP status to answer with.
"""

from __future__ import annotations

import collections
import copy
import datetime
import decimal
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .scenario import (
    FieldSpec,
    FieldValueError,
    Scenario,
    StepSpec,
    is_empty_json,
    json_dumps,
    json_loads,
    load_scenario,
    resolve_field,
    seed_values,
    value_to_json,
)

POLL_SEMANTICS = ("once", "until-completed")
EMPTY_POLL_SHAPES = ("204", "null", "{}", "[]", "empty200", "null-id")
TOKEN_SHAPES = ("string", "object", "text")
ERROR_SHAPES = ("message", "error", "text", "html")

FIRST_PROCESS_ID = 1001
FIRST_INSTANCE_ID = 5001
FIRST_TASK_ID = 9001
DEFAULT_TOKEN_LIFETIME = 3600
REQUEST_LOG_LIMIT = 20_000
STATE_FILE_VERSION = 1


class ApiError(Exception):
    """An API failure: HTTP ``status`` plus a human-readable ``message``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def utc_now_iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- settings & faults


@dataclass
class Settings:
    """Behaviour switches; see docs/emulator.md for what each value means."""

    poll_semantics: str = "once"
    empty_poll: str = "204"
    token_shape: str = "string"
    error_shape: str = "message"
    latency_ms: int = 0
    rate_limit: float = 0
    rate_limit_burst: float = 0

    def validated(self) -> Settings:
        choices = {
            "poll_semantics": POLL_SEMANTICS,
            "empty_poll": EMPTY_POLL_SHAPES,
            "token_shape": TOKEN_SHAPES,
            "error_shape": ERROR_SHAPES,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int) or self.latency_ms < 0:
            raise ValueError(f"latency_ms must be a non-negative integer; got {self.latency_ms!r}")
        for name in ("rate_limit", "rate_limit_burst"):
            value = getattr(self, name)
            if isinstance(value, decimal.Decimal):  # JSON bodies are parsed with exact Decimals
                value = float(value)
                setattr(self, name, value)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a number >= 0 (0: off); got {value!r}")
        return self

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values = asdict(self)
        for name, value in changes.items():
            # The HTTP/CLI layers may send the 204 empty-poll shape as a number.
            values[name] = str(value) if name == "empty_poll" and isinstance(value, int) else value
        return Settings(**values).validated()


@dataclass
class FaultConfig:
    """Fault injection applied to ``/api/`` requests (never to ``/_emulator/``)."""

    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504, 429])
    retry_after: float = 1
    latency_ms: int = 0
    drop_rate: float = 0.0
    commit_then_drop_rate: float = 0.0
    seed: int | None = None
    methods: list[str] | None = None
    paths: list[str] | None = None
    max_faults: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        # JSON bodies are parsed with exact Decimals; fault knobs are plain floats.
        normalized: dict[str, Any] = {k: float(v) if isinstance(v, decimal.Decimal) else v for k, v in data.items()}
        config = cls(**normalized)
        for name in ("error_rate", "drop_rate", "commit_then_drop_rate"):
            rate = getattr(config, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1; got {rate!r}")
            setattr(config, name, float(rate))
        statuses = config.error_statuses
        if (
            not isinstance(statuses, list)
            or not statuses
            or not all(isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 599 for s in statuses)
        ):
            raise ValueError("error_statuses must be a non-empty list of HTTP error statuses (400-599)")
        if isinstance(config.latency_ms, bool) or not isinstance(config.latency_ms, int) or config.latency_ms < 0:
            raise ValueError("latency_ms must be a non-negative integer")
        if isinstance(config.retry_after, bool) or not isinstance(config.retry_after, int | float):
            raise ValueError("retry_after must be a number of seconds")
        if config.seed is not None and (isinstance(config.seed, bool) or not isinstance(config.seed, int)):
            raise ValueError("seed must be an integer or null")
        if config.methods is not None:
            if not isinstance(config.methods, list) or not all(isinstance(m, str) for m in config.methods):
                raise ValueError("methods must be null or a list of HTTP methods")
            config.methods = [m.upper() for m in config.methods]
        if config.paths is not None and (
            not isinstance(config.paths, list) or not all(isinstance(p, str) for p in config.paths)
        ):
            raise ValueError("paths must be null or a list of path prefixes")
        if config.max_faults is not None and (
            isinstance(config.max_faults, bool) or not isinstance(config.max_faults, int) or config.max_faults < 0
        ):
            raise ValueError("max_faults must be null or a non-negative integer")
        return config

    def applies_to(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.paths is None or any(path.startswith(prefix) for prefix in self.paths)


@dataclass(frozen=True)
class FaultDecision:
    """What the HTTP layer must do to one request. ``action`` is None, error, drop or commit_then_drop."""

    latency_s: float = 0.0
    action: str | None = None
    status: int | None = None
    retry_after: float | None = None

    @property
    def label(self) -> str | None:
        if self.action == "error":
            return f"error:{self.status}"
        return self.action


NO_FAULT = FaultDecision()


@dataclass
class TokenBucket:
    """The tenant's rate limit: ``rate`` tokens a second, at most ``burst`` kept; one token per API request."""

    tokens: float | None = None  # None: full
    at: float = 0.0
    admitted: int = 0
    refused: int = 0

    def take(self, now: float, rate: float, burst: float) -> float | None:
        tokens = burst if self.tokens is None else min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if tokens >= 1:
            self.tokens = tokens - 1
            self.admitted += 1
            return None
        self.tokens = tokens
        self.refused += 1
        return (1 - tokens) / rate


# --------------------------------------------------------------------------- records


@dataclass
class IntegrationInstance:
    """One integration instance of the emulated tenant: its step, fields and status."""

    id: int
    process_instance_id: int
    integration_step_id: int
    integration_step_title: str
    process_diagram_id: int
    fields: list[FieldSpec]
    values: dict[str, str]  # field key -> valueJson text
    created_at: float
    status: str = "new"  # new | handed_out | completed
    handed_out_at: float | None = None
    handed_out_count: int = 0
    completed_by: str | None = None
    completed_at: float | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)

    def api_fields(self) -> list[dict[str, Any]]:
        return [
            {
                "label": spec.label,
                "type": spec.type,
                "key": spec.key,
                "options": list(spec.options) if spec.options is not None else None,
                "valueJson": self.values.get(spec.key, "null"),
                "isReadonly": spec.is_readonly,
                "isRequired": spec.is_required,
            }
            for spec in self.fields
        ]

    def to_record(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["fields"] = [spec.to_dict() for spec in self.fields]
        return data

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> IntegrationInstance:
        values = dict(data)
        values["fields"] = [FieldSpec.from_dict(spec) for spec in data["fields"]]
        # The state file is parsed with exact Decimals; timestamps are plain floats in memory.
        for name in ("created_at", "handed_out_at", "completed_at"):
            values[name] = _float_or_none(values.get(name))
        values["updates"] = [{**u, "at": float(u["at"])} for u in values.get("updates", [])]
        return cls(**values)


# --------------------------------------------------------------------------- state


class EmulatorState:
    """All emulator state behind one lock.

    ``clock`` returns epoch seconds and is injectable so token expiry can be tested without sleeping.
    """

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        *,
        state_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> None:
        self.scenario = load_scenario(scenario)
        self.state_file = Path(state_file) if state_file is not None else None
        self._clock = clock
        self._lock = threading.RLock()
        explicit = {k: v for k, v in settings.items() if v is not None}
        self._initial_settings = Settings().updated(explicit)
        self.settings = self._initial_settings
        self._faults: FaultConfig | None = None
        self._rng = random.Random()
        self._faults_applied = 0
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_LOG_LIMIT)
        self._admin_requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_LOG_LIMIT)
        self._request_seq = 0
        self._bucket = TokenBucket()
        self._reset_data()
        if self.state_file is not None and self.state_file.exists():
            self._load_state_file()
            # Settings given explicitly (CLI flags, constructor kwargs) beat the persisted ones.
            self.settings = self.settings.updated(explicit)
        self._persist()

    # ------------------------------------------------------------------ lifecycle

    def _reset_data(self) -> None:
        self._next_process_id = FIRST_PROCESS_ID
        self._next_instance_id = FIRST_INSTANCE_ID
        self._next_task_id = FIRST_TASK_ID
        self.instances: dict[int, IntegrationInstance] = {}
        self.processes: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self._minted_tokens: dict[str, float] = {}  # token -> expiry epoch seconds
        self._static_tokens_valid = True
        for seed in self.scenario.instances:
            self._create_instances_locked(
                step_id=seed.integration_step_id,
                count=1,
                values=seed.values,
                created_by="scenario",
                source="scenario",
            )

    def reset(self) -> None:
        """Back to the scenario: data, tokens, settings, faults and request logs."""
        with self._lock:
            self._reset_data()
            self.settings = self._initial_settings
            self._faults = None
            self._faults_applied = 0
            self._requests.clear()
            self._admin_requests.clear()
            self._bucket = TokenBucket()
            self._persist()

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ persistence

    def _persist(self) -> None:
        if self.state_file is None:
            return
        data = {
            "version": STATE_FILE_VERSION,
            "counters": {
                "process": self._next_process_id,
                "instance": self._next_instance_id,
                "task": self._next_task_id,
            },
            "settings": asdict(self.settings),
            "static_tokens_valid": self._static_tokens_valid,
            "minted_tokens": self._minted_tokens,
            "instances": [inst.to_record() for inst in self.instances.values()],
            "processes": list(self.processes.values()),
            "tasks": list(self.tasks.values()),
        }
        target = self.state_file
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temp file in the same directory then rename, so a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json_dumps(data, indent=1))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load_state_file(self) -> None:
        assert self.state_file is not None
        try:
            data = json_loads(self.state_file.read_text(encoding="utf-8"))
            if data.get("version") != STATE_FILE_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            counters = data["counters"]
            self._next_process_id = int(counters["process"])
            self._next_instance_id = int(counters["instance"])
            self._next_task_id = int(counters["task"])
            self.settings = Settings().updated(data.get("settings", {}))
            self._static_tokens_valid = bool(data["static_tokens_valid"])
            self._minted_tokens = {str(k): float(v) for k, v in data["minted_tokens"].items()}
            self.instances = {int(rec["id"]): IntegrationInstance.from_record(rec) for rec in data["instances"]}
            self.processes = {
                int(rec["id"]): {**rec, "created_at": float(rec["created_at"])} for rec in data["processes"]
            }
            self.tasks = {int(rec["id"]): {**rec, "created_at": float(rec["created_at"])} for rec in data["tasks"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot load state file {self.state_file.name}: {exc}") from exc

    # ------------------------------------------------------------------ settings & faults

    def update_settings(self, **changes: Any) -> dict[str, Any]:
        with self._lock:
            self.settings = self.settings.updated(changes)
            if {"rate_limit", "rate_limit_burst"} & set(changes):
                self._bucket = TokenBucket()  # a new limit starts with a full bucket and new counts
            self._persist()
            return asdict(self.settings)

    def get_settings(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.settings)

    def set_faults(self, config: FaultConfig | Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        if config is None:
            config = FaultConfig.from_mapping(options)
        elif not isinstance(config, FaultConfig):
            config = FaultConfig.from_mapping({**config, **options})
        with self._lock:
            self._faults = config
            self._rng = random.Random(config.seed)
            self._faults_applied = 0
            return asdict(config)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = None
            self._faults_applied = 0

    def get_faults(self) -> dict[str, Any] | None:
        with self._lock:
            if self._faults is None:
                return None
            return {**asdict(self._faults), "faults_applied": self._faults_applied}

    def decide_fault(self, method: str, path: str) -> FaultDecision:
        """Roll the dice for one API request (seeded, so a run repeats)."""
        with self._lock:
            base_latency = self.settings.latency_ms / 1000
            config = self._faults
            if config is None or not config.applies_to(method, path):
                return FaultDecision(latency_s=base_latency) if base_latency else NO_FAULT
            latency = base_latency + config.latency_ms / 1000
            exhausted = config.max_faults is not None and self._faults_applied >= config.max_faults
            action: str | None = None
            status: int | None = None
            # Each rate only consumes a random draw when it is enabled, so adding e.g. a drop_rate
            # does not shift the sequence of an error_rate-only configuration.
            if not exhausted and config.drop_rate and self._rng.random() < config.drop_rate:
                action = "drop"
            if action is None and not exhausted and config.error_rate and self._rng.random() < config.error_rate:
                action = "error"
                status = self._rng.choice(config.error_statuses)
            if (
                action is None
                and not exhausted
                and method.upper() in ("POST", "PATCH")
                and config.commit_then_drop_rate
                and self._rng.random() < config.commit_then_drop_rate
            ):
                action = "commit_then_drop"
            if action is not None:
                self._faults_applied += 1
            return FaultDecision(
                latency_s=latency,
                action=action,
                status=status,
                retry_after=config.retry_after if status == 429 else None,
            )

    # ------------------------------------------------------------------ tokens & auth

    def mint_token(self, lifetime_s: int = DEFAULT_TOKEN_LIFETIME) -> str:
        if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int) or lifetime_s <= 0:
            raise ApiError(400, f"lifeTimeInSec must be a positive integer; got {lifetime_s!r}")
        token = "tok_" + secrets.token_hex(20)
        with self._lock:
            now = self.now()
            # Forget long-expired tokens so the table does not grow forever in long runs.
            self._minted_tokens = {t: exp for t, exp in self._minted_tokens.items() if exp > now - 3600}
            self._minted_tokens[token] = now + lifetime_s
            self._persist()
        return token

    def token_is_valid(self, token: str) -> bool:
        with self._lock:
            if token in self.scenario.api_tokens:
                return self._static_tokens_valid
            expiry = self._minted_tokens.get(token)
            return expiry is not None and self.now() < expiry

    def check_admin(self, login: str, password: str) -> bool:
        # compare_digest keeps the comparison constant-time, as a real server would.
        return secrets.compare_digest(login, self.scenario.admin_login) and secrets.compare_digest(
            password, self.scenario.admin_password
        )

    def expire_tokens(self) -> None:
        """Expire every token now: minted ones for good, static ones until :meth:`reset`."""
        with self._lock:
            now = self.now()
            self._minted_tokens = {t: min(exp, now) for t, exp in self._minted_tokens.items()}
            self._static_tokens_valid = False
            self._persist()

    # ------------------------------------------------------------------ directory

    def list_workflows(self, search_term: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        term = (search_term or "").casefold()
        found = [{"Id": d.id, "Title": d.title} for d in self.scenario.diagrams if term in d.title.casefold()]
        return found[:limit]

    def list_integration_steps(self, diagram_id: int) -> list[dict[str, Any]]:
        diagram = self.scenario.diagram(diagram_id)
        if diagram is None:
            raise ApiError(404, f"Process diagram {diagram_id} not found")
        return [{"Id": s.id, "Title": s.title} for s in diagram.steps]

    def search_users(self, query: str | None = None, limit: int = 15) -> list[dict[str, Any]]:
        term = (query or "").casefold()
        found = [
            u.to_api() for u in self.scenario.users if term in u.full_name.casefold() or term in u.email.casefold()
        ]
        return found[:limit]

    def _require_user(self, raw: Any, what: str) -> int:
        try:
            user_id = int(str(raw).strip())
        except (TypeError, ValueError):
            raise ApiError(400, f"{what} must be the Id of an existing user; got {raw!r}") from None
        if self.scenario.user(user_id) is None:
            raise ApiError(400, f"{what} must be the Id of an existing user; user {user_id} not found")
        return user_id

    # ------------------------------------------------------------------ instances

    def _new_instance_locked(
        self, process_id: int, diagram_id: int, step: StepSpec, values: Mapping[str, Any] | None
    ) -> IntegrationInstance:
        instance = IntegrationInstance(
            id=self._next_instance_id,
            process_instance_id=process_id,
            integration_step_id=step.id,
            integration_step_title=step.title,
            process_diagram_id=diagram_id,
            fields=list(step.fields),
            values=seed_values(step, values or {}),
            created_at=self.now(),
        )
        self._next_instance_id += 1
        self.instances[instance.id] = instance
        return instance

    def _new_process_locked(
        self, diagram_id: int, created_by: str | int | None, process_fields: Any, source: str
    ) -> dict[str, Any]:
        diagram = self.scenario.diagram(diagram_id)
        assert diagram is not None
        process_id = self._next_process_id
        self._next_process_id += 1
        record = {
            "id": process_id,
            "process_diagram_id": diagram.id,
            "title": f"{diagram.title} #{process_id}",
            "created_by": created_by,
            "fields": copy.deepcopy(process_fields),
            "created_at": self.now(),
            "source": source,
            "integration_instance_ids": [],
        }
        self.processes[process_id] = record
        return record

    def _create_instances_locked(
        self,
        *,
        step_id: int | None = None,
        diagram_id: int | None = None,
        count: int = 1,
        values: Mapping[str, Any] | None = None,
        created_by: str | int | None = "emulator",
        source: str = "admin",
    ) -> list[dict[str, int]]:
        if (step_id is None) == (diagram_id is None):
            raise ValueError("give exactly one of integration_step_id or process_diagram_id")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer; got {count!r}")
        values = dict(values or {})
        if step_id is not None:
            found = self.scenario.step(step_id)
            if found is None:
                raise LookupError(f"integration step {step_id} not found")
            diagram = found[0]
            plan: list[tuple[StepSpec, dict[str, Any]]] = [(found[1], values)]
        else:
            assert diagram_id is not None
            maybe_diagram = self.scenario.diagram(diagram_id)
            if maybe_diagram is None:
                raise LookupError(f"process diagram {diagram_id} not found")
            diagram = maybe_diagram
            # With a whole diagram, each value goes to the step(s) that have a field of that name.
            plan = []
            used: set[str] = set()
            for step in diagram.steps:
                names = (
                    {s.label for s in step.fields} | {s.key for s in step.fields} | {s.api_name for s in step.fields}
                )
                plan.append((step, {k: v for k, v in values.items() if k in names}))
                used.update(k for k in values if k in names)
            unused = sorted(set(values) - used)
            if unused:
                raise FieldValueError(f"no integration step of diagram {diagram.id} has field(s) {unused}")
        for step, step_values in plan:
            seed_values(step, step_values)  # validate everything before creating anything
        created: list[dict[str, int]] = []
        for _ in range(count):
            process = self._new_process_locked(diagram.id, created_by, {}, source)
            for step, step_values in plan:
                instance = self._new_instance_locked(process["id"], diagram.id, step, step_values)
                process["integration_instance_ids"].append(instance.id)
                created.append({"IntegrationInstanceId": instance.id, "ProcessInstanceId": process["id"]})
        return created

    def create_instances(
        self,
        integration_step_id: int | None = None,
        *,
        process_diagram_id: int | None = None,
        count: int = 1,
        values: Mapping[str, Any] | None = None,
        created_by: str | int | None = "emulator",
    ) -> list[dict[str, int]]:
        """Create pending integration instances (each in a new process instance).

        ``values`` maps field label (or key, or ``field_<key>``) to a value; read-only fields may
        be set here. Raises ``LookupError`` for unknown ids and ``ValueError`` for bad values.
        """
        with self._lock:
            created = self._create_instances_locked(
                step_id=integration_step_id,
                diagram_id=process_diagram_id,
                count=count,
                values=values,
                created_by=created_by,
            )
            self._persist()
            return created

    def poll(self, step_id: int) -> dict[str, int] | None:
        """Next integration instance for a step, or None when there is nothing new."""
        with self._lock:
            if self.scenario.step(step_id) is None:
                raise ApiError(404, f"Integration step {step_id} not found")
            self._arrive_due_locked()
            wanted = ("new",) if self.settings.poll_semantics == "once" else ("new", "handed_out")
            candidates = [i for i in self.instances.values() if i.integration_step_id == step_id and i.status in wanted]
            if not candidates:
                return None
            instance = min(candidates, key=lambda i: i.id)
            instance.status = "handed_out"
            instance.handed_out_count += 1
            instance.handed_out_at = self.now()
            self._persist()
            return {"IntegrationInstanceId": instance.id, "ProcessInstanceId": instance.process_instance_id}

    def _instance(self, instance_id: int) -> IntegrationInstance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise ApiError(404, f"Integration instance {instance_id} not found")
        return instance

    def get_variables(self, instance_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return self._instance(instance_id).api_fields()

    def update_variables(self, task_id: Any, updates: Any, on_behalf_of: str | None) -> list[dict[str, Any]]:
        """Apply a ``Fields`` update all-or-nothing; returns the updated field list."""
        if not on_behalf_of:
            raise ApiError(400, "Header X-OnBehalfOf-Id is required")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise ApiError(400, f"TaskId must be an integer; got {task_id!r}")
        if not isinstance(updates, Mapping):
            raise ApiError(400, "Fields must be an object mapping field_<key> to a value")
        with self._lock:
            instance = self._instance(task_id)
            if instance.status == "completed":
                raise ApiError(409, f"Integration instance {task_id} is already completed")
            by_name = {spec.api_name: spec for spec in instance.fields}
            staged: dict[str, str] = {}
            for name, value in updates.items():
                spec = by_name.get(name)
                if spec is None:
                    raise ApiError(400, f"Unknown field {name!r} for integration instance {task_id}")
                if spec.is_readonly:
                    raise ApiError(400, f"Field '{spec.label}' is read-only and cannot be updated")
                try:
                    staged[spec.key] = value_to_json(spec, value)
                except FieldValueError as exc:
                    raise ApiError(400, str(exc)) from None
            instance.values.update(staged)
            labels = {spec.key: spec.label for spec in instance.fields}
            instance.updates.append(
                {
                    "by": on_behalf_of,
                    "at": self.now(),
                    "fields": {labels[key]: text for key, text in staged.items()},
                }
            )
            self._persist()
            return instance.api_fields()

    def complete(self, instance_id: int, body: Any, on_behalf_of: str | None) -> None:
        if not on_behalf_of:
            raise ApiError(400, "Header X-OnBehalfOf-Id is required")
        if not isinstance(body, Mapping) or body.get("Action") != "Complete" or body.get("CustomAction") != "__AUTO__":
            raise ApiError(400, 'Body must be {"Action": "Complete", "CustomAction": "__AUTO__"}')
        with self._lock:
            instance = self._instance(instance_id)
            if instance.status == "completed":
                raise ApiError(409, f"Integration instance {instance_id} is already completed")
            empty = [s.label for s in instance.fields if s.is_required and is_empty_json(instance.values.get(s.key))]
            if empty:
                raise ApiError(400, f"Required fields are empty: {', '.join(empty)}")
            instance.status = "completed"
            instance.completed_by = on_behalf_of
            instance.completed_at = self.now()
            self._persist()

    # ------------------------------------------------------------------ processes & tasks

    def start_process(self, body: Any, on_behalf_of: str | None) -> dict[str, Any]:
        user_id = self._require_user(on_behalf_of, "Header X-OnBehalfOf-Id")
        if not isinstance(body, Mapping):
            raise ApiError(400, "Body must be a JSON object")
        template_id = body.get("TemplateId")
        if isinstance(template_id, bool) or not isinstance(template_id, int):
            raise ApiError(400, f"TemplateId must be an integer; got {template_id!r}")
        process_fields = body.get("Fields", {})
        if process_fields is None:
            process_fields = {}
        if not isinstance(process_fields, Mapping):
            raise ApiError(400, "Fields must be an object")
        with self._lock:
            diagram = self.scenario.diagram(template_id)
            if diagram is None:
                raise ApiError(404, f"Process diagram {template_id} not found")
            later = [step for step in diagram.steps if step.reached != "at-start"]
            for step in later:  # the process's fields that a later step has: checked now, given to it then
                try:
                    seed_values(step, self._step_values(step, process_fields))
                except FieldValueError as exc:
                    raise ApiError(400, str(exc)) from None
            process = self._new_process_locked(diagram.id, user_id, dict(process_fields), "api")
            for step in diagram.steps:
                if step.reached == "at-start":
                    instance = self._new_instance_locked(process["id"], diagram.id, step, None)
                    process["integration_instance_ids"].append(instance.id)
                else:  # reached later: after a delay, or on an admin call (None)
                    due = None if step.reached == "admin-call" else self.now() + float(step.reached)
                    process.setdefault("pending_steps", {})[str(step.id)] = due
            self._persist()
            return {"Id": process["id"], "Title": process["title"]}

    @staticmethod
    def _step_values(step: StepSpec, process_fields: Mapping[str, Any]) -> dict[str, Any]:
        """Return the process's fields that name a field of ``step`` (label, key or ``field_<key>``)."""
        return {name: value for name, value in process_fields.items() if resolve_field(step, str(name)) is not None}

    def _reach_locked(self, process: dict[str, Any], step: StepSpec,
                      values: Mapping[str, Any] | None) -> dict[str, int]:
        """Make the process reach ``step`` now: its integration instance is created and queued for polling."""
        step_values = {**self._step_values(step, process.get("fields") or {}), **dict(values or {})}
        instance = self._new_instance_locked(process["id"], process["process_diagram_id"], step, step_values)
        process["integration_instance_ids"].append(instance.id)
        process.get("pending_steps", {}).pop(str(step.id), None)
        if not process.get("pending_steps"):
            process.pop("pending_steps", None)
        return {"IntegrationInstanceId": instance.id, "ProcessInstanceId": process["id"]}

    def _arrive_due_locked(self) -> None:
        """Make the processes whose delay before a step has run out reach it (called before every poll and snapshot)."""
        now = self.now()
        changed = False
        for process in self.processes.values():
            for step_id, due in list((process.get("pending_steps") or {}).items()):
                found = self.scenario.step(int(step_id))
                if due is not None and float(due) <= now and found is not None:
                    self._reach_locked(process, found[1], None)
                    changed = True
        if changed:
            self._persist()

    def reach(self, process_instance_id: int, integration_step_id: int | None = None,
              values: Mapping[str, Any] | None = None) -> list[dict[str, int]]:
        """Make a started process reach its pending integration step(s) now (``None``: every pending one).

        ``values`` (by label, key or ``field_<key>``; read-only fields too) are what a person entered in the process
        before the step. Raises ``LookupError`` for an unknown process and ``ApiError(409)`` when it has no such
        pending step.
        """
        with self._lock:
            self._arrive_due_locked()
            process = self.processes.get(process_instance_id) if isinstance(process_instance_id, int) else None
            if process is None:
                raise LookupError(f"process instance {process_instance_id!r} not found")
            pending = [int(i) for i in process.get("pending_steps") or {}]
            if integration_step_id is not None:
                if integration_step_id not in pending:
                    raise ApiError(409, f"Process instance {process_instance_id} has no pending integration step "
                                        f"{integration_step_id} (pending: {pending or 'none'})")
                pending = [integration_step_id]
            if not pending:
                raise ApiError(409, f"Process instance {process_instance_id} has no pending integration step")
            steps = [found[1] for i in pending if (found := self.scenario.step(i)) is not None]
            for step in steps:
                seed_values(step, {**self._step_values(step, process.get("fields") or {}), **dict(values or {})})
            created = [self._reach_locked(process, step, values) for step in steps]
            self._persist()
            return created

    def create_task(self, body: Any, on_behalf_of: str | None) -> dict[str, Any]:
        user_id = self._require_user(on_behalf_of, "Header X-OnBehalfOf-Id")
        if not isinstance(body, Mapping):
            raise ApiError(400, "Body must be a JSON object")
        title = body.get("Title")
        if not isinstance(title, str) or not title.strip():
            raise ApiError(400, "Title is required and must be a non-empty string")
        assignee_raw = body.get("AssignedUserId")
        assignee = user_id if assignee_raw is None else self._require_user(assignee_raw, "AssignedUserId")
        description = body.get("Description")
        if description is not None and not isinstance(description, str):
            raise ApiError(400, "Description must be a string")
        files = body.get("Files")
        if files is not None and not isinstance(files, list):
            raise ApiError(400, "Files must be a list")
        with self._lock:
            task_id = self._next_task_id
            self._next_task_id += 1
            self.tasks[task_id] = {
                "id": task_id,
                "title": title,
                "description": description,
                "created_by": user_id,
                "assigned_user_id": assignee,
                "files": copy.deepcopy(files),
                "created_at": self.now(),
            }
            self._persist()
        return {"Id": task_id, "Title": title, "Description": description}

    # ------------------------------------------------------------------ request log

    def log_request(self, entry: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
        with self._lock:
            self._request_seq += 1
            entry = {"seq": self._request_seq, "time": utc_now_iso(self.now()), **entry}
            (self._admin_requests if admin else self._requests).append(entry)
            return entry

    def request_log(self, *, admin: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self._admin_requests if admin else self._requests))

    def clear_request_log(self) -> None:
        with self._lock:
            self._requests.clear()
            self._admin_requests.clear()
            self._bucket.refused = self._bucket.admitted = 0

    # ------------------------------------------------------------------ rate limit

    def take_rate_token(self) -> float | None:
        """Admit one API request under the tenant's rate limit: ``None``, or the seconds until a token is free (429)."""
        with self._lock:
            rate = float(self.settings.rate_limit)
            if not rate:
                return None
            burst = float(self.settings.rate_limit_burst or max(1.0, rate))
            return self._bucket.take(self.now(), rate, burst)

    def rate_limit_stats(self) -> dict[str, Any]:
        """Return the rate limit and its counts since the request log was last cleared (``refused``: 429 answers)."""
        with self._lock:
            rate = float(self.settings.rate_limit)
            burst = float(self.settings.rate_limit_burst or max(1.0, rate)) if rate else 0.0
            return {"requests_per_second": rate, "burst": burst, "admitted": self._bucket.admitted,
                    "refused": self._bucket.refused}

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """Whole state as plain data (token values are never included)."""
        with self._lock:
            self._arrive_due_locked()
            now = self.now()
            return {
                "scenario": self.scenario.source,
                "settings": asdict(self.settings),
                "faults": self.get_faults(),
                "tokens": {
                    "static_count": len(self.scenario.api_tokens),
                    "static_valid": self._static_tokens_valid,
                    "minted_active": sum(1 for exp in self._minted_tokens.values() if exp > now),
                    "minted_expired": sum(1 for exp in self._minted_tokens.values() if exp <= now),
                },
                "counters": {
                    "next_process_instance_id": self._next_process_id,
                    "next_integration_instance_id": self._next_instance_id,
                    "next_task_id": self._next_task_id,
                },
                "instances": [self._instance_view(i) for i in sorted(self.instances.values(), key=lambda i: i.id)],
                "processes": [self._process_view(p) for _, p in sorted(self.processes.items())],
                "tasks": [self._task_view(t) for _, t in sorted(self.tasks.items())],
                "request_count": len(self._requests),
                "rate_limit": self.rate_limit_stats(),
            }

    @staticmethod
    def _instance_view(instance: IntegrationInstance) -> dict[str, Any]:
        labels = [(spec.label, instance.values.get(spec.key, "null")) for spec in instance.fields]
        return {
            "IntegrationInstanceId": instance.id,
            "ProcessInstanceId": instance.process_instance_id,
            "integration_step_id": instance.integration_step_id,
            "integration_step_title": instance.integration_step_title,
            "process_diagram_id": instance.process_diagram_id,
            "status": instance.status,
            "fields": {label: json_loads(text) for label, text in labels},
            "values_json": dict(labels),
            "created_at": utc_now_iso(instance.created_at),
            "handed_out_at": _iso_or_none(instance.handed_out_at),
            "handed_out_count": instance.handed_out_count,
            "completed_by": instance.completed_by,
            "completed_at": _iso_or_none(instance.completed_at),
            "updates": [{**u, "at": utc_now_iso(u["at"])} for u in copy.deepcopy(instance.updates)],
        }

    @staticmethod
    def _process_view(process: Mapping[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(dict(process))
        view["created_at"] = utc_now_iso(process["created_at"])
        if "pending_steps" in view:  # step id -> when it is reached (null: on an admin call)
            view["pending_steps"] = {k: _iso_or_none(_float_or_none(v)) for k, v in view["pending_steps"].items()}
        return view

    @staticmethod
    def _task_view(task: Mapping[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(dict(task))
        view["created_at"] = utc_now_iso(task["created_at"])
        return view

    def instances_for(self, step_id: int) -> Iterable[dict[str, Any]]:
        """Snapshot views of the instances of one integration step (oldest first)."""
        return [i for i in self.snapshot()["instances"] if i["integration_step_id"] == step_id]


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _iso_or_none(timestamp: float | None) -> str | None:
    return None if timestamp is None else utc_now_iso(timestamp)
