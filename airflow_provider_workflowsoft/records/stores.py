"""Where records live: a small key-value protocol and its implementations.

* :class:`VariableStore` - Airflow Variables (every supported Airflow; listable by key prefix);
* :class:`TaskStateStore` - Airflow 3.3's ``task_state_store`` of the running task instance;
* :class:`AssetStateStore` - Airflow 3.3's per-Asset store, where an asset watcher keeps its claims;
* :class:`WatcherVariableStore` - an asset watcher's view of the Variables where its triggerer lists none (Airflow
  3.1): its events' ack slots stand in for the listing;
* :class:`MemoryStore` - in memory (tests, scripts without Airflow);
* :class:`CountingStore` - wraps another store and counts its round trips (tests and benchmarks).

Every call of the Airflow-backed stores is one round trip (through the task's supervisor to the API
server on Airflow 3), so the ledgers are written to need few of them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from airflow.providers.common.compat.sdk import Variable

from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS

log = logging.getLogger(__name__)


class KeyValueStore(Protocol):
    """What the records need from a store: JSON values by string key, and listing by prefix."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class VariableStore:
    """Airflow Variables as a JSON key-value store (the default store of the claims)."""

    def get(self, key: str) -> Any:
        """Return the JSON Variable ``key``, or ``None`` when it does not exist."""
        if AIRFLOW_V_3_0_PLUS:
            return Variable.get(key, default=None, deserialize_json=True)
        return Variable.get(key, default_var=None, deserialize_json=True)  # type: ignore[call-arg]

    def set(self, key: str, value: Any) -> None:
        Variable.set(key, value, serialize_json=True)

    def delete(self, key: str) -> None:
        try:
            Variable.delete(key)
        except Exception as exc:  # deleting what is already gone is not an error here
            log.debug("Variable %s not deleted: %s", key, exc)

    def keys(self, prefix: str) -> list[str]:
        """Return the keys starting with ``prefix``.

        The Task SDK's ``Variable.keys`` on 3.x; a query of the metadata database on 2.11, where tasks still reach it.
        """
        listing = getattr(Variable, "keys", None)
        if listing is not None:
            return sorted(k for k in listing(prefix=prefix) if k.startswith(prefix))
        return _metadata_variable_keys(prefix)

    def describe(self, key: str) -> str:
        return f"the Airflow Variable {key!r} (airflow variables delete {key})"


class _AccessorStore:
    """One of Airflow 3.3's state stores through its accessor (``get``/``set``/``delete``; no listing)."""

    accessor: Any

    def get(self, key: str) -> Any:
        return self.accessor.get(key, None)

    def set(self, key: str, value: Any) -> None:
        self.accessor.set(key, value)

    def delete(self, key: str) -> None:
        self.accessor.delete(key)

    def keys(self, prefix: str) -> list[str]:  # pragma: no cover - these records are read by their key
        raise NotImplementedError(f"{type(self).__name__} cannot list keys: Airflow offers no listing here")


class TaskStateStore(_AccessorStore):
    """Airflow 3.3's per-task-instance store (``context["task_state_store"]``).

    Survives retries and deferrals, is not shown among Variables, and expires after ``[state_store]
    default_retention_days``.

    :param accessor: ``context["task_state_store"]``
    :param where: how a user reaches this task instance's store (for error messages)
    """

    def __init__(self, accessor: Any, where: str = "") -> None:
        self.accessor = accessor
        self.where = where

    def describe(self, key: str) -> str:
        return (
            f"the task-state key {key!r} of this task instance ({self.where}/{key}: DELETE it with Airflow's "
            "REST API; on Airflow 3.3 clearing the task keeps it, from 3.4 a clear drops it)"
        )


class AssetStateStore(_AccessorStore):
    """Airflow 3.3's per-Asset store, as an asset watcher's trigger gets it (``self.asset_state_store``).

    Kept across runs and restarts of the triggerer, gone when no DAG references the Asset any more. An asset watcher
    keeps its claims record here.

    :param accessor: the accessor of one Asset (``get``/``set``/``delete``)
    :param asset_name: the Asset's name (for error messages)
    """

    def __init__(self, accessor: Any, asset_name: str = "") -> None:
        self.accessor = accessor
        self.asset_name = asset_name

    def describe(self, key: str) -> str:
        return (f"the state-store key {key!r} of the Asset {self.asset_name!r} (Airflow's REST API: "
                "/api/v2/assets/{asset id}/state-store)")


class WatcherVariableStore:
    """An asset watcher's view of the other claims records where its triggerer lists no Variables (Airflow 3.1).

    Reads and writes go to ``variables`` (Airflow Variables) by key. :meth:`keys` answers the claims ledger's listing
    with the *ack slots* that the watcher's own record (``record_key``) names: each event names one
    (:func:`~airflow_provider_workflowsoft.records.naming.ack_key`, in every claim it handed out), and the run that
    takes the event over mirrors its claims of those instances there on every write of its record
    (:meth:`~airflow_provider_workflowsoft.records.claims.ClaimsLedger.claim`). So the watcher reads what the runs took
    and completed, the way it reads their records where it can list them (Airflow 3.3). One read of its record more
    per listing.

    :param variables: where the records live (:class:`VariableStore` in the triggerer; tests pass a memory store)
    :param record_key: the key of the watcher's own claims record
    """

    def __init__(self, variables: KeyValueStore, record_key: str) -> None:
        self.variables = variables
        self.record_key = record_key

    def get(self, key: str) -> Any:
        return self.variables.get(key)

    def set(self, key: str, value: Any) -> None:
        self.variables.set(key, value)

    def delete(self, key: str) -> None:
        self.variables.delete(key)

    def keys(self, prefix: str) -> list[str]:
        """Return the ack slots named by the watcher's record (its claims and parked entries), whatever ``prefix``."""
        record = self.variables.get(self.record_key)
        entries: list[Any] = []
        for part in ("claims", "parked"):
            value = record.get(part) if isinstance(record, dict) else None
            entries.extend(value.values() if isinstance(value, dict) else [])
        return sorted({str(e["ack"]) for e in entries if isinstance(e, dict) and e.get("ack")})

    def describe(self, key: str) -> str:
        return describe(self.variables, key)


class MemoryStore:
    """An in-memory store (tests, scripts without Airflow)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            value = self.data.get(key)
            return json.loads(json.dumps(value)) if value is not None else None

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        with self._lock:
            self.data.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self.data if k.startswith(prefix))

    def describe(self, key: str) -> str:
        return f"the record {key!r}"


class CountingStore:
    """Counts the round trips made to ``inner`` (per operation), for tests, benchmarks and metrics.

    :param on_call: told ``(operation, seconds)`` after every round trip (the operators send claim writes to
        Airflow's metrics there); its errors are ignored
    """

    def __init__(self, inner: KeyValueStore, *, on_call: Callable[[str, float], None] | None = None) -> None:
        self.inner = inner
        self.on_call = on_call
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def _timed(self, op: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self.calls[op] += 1
                self.seconds[op] = self.seconds.get(op, 0.0) + seconds
            if self.on_call is not None:
                try:
                    self.on_call(op, seconds)
                except Exception as exc:  # metrics never fail a record write
                    log.debug("A store observer failed: %s", exc)

    @property
    def round_trips(self) -> int:
        return sum(self.calls.values())

    def mean_ms(self, op: str) -> float:
        """Return the mean duration of one ``op`` round trip, in milliseconds (0 when none was made)."""
        return 1000 * self.seconds.get(op, 0.0) / self.calls[op] if self.calls[op] else 0.0

    def get(self, key: str) -> Any:
        return self._timed("get", self.inner.get, key)

    def set(self, key: str, value: Any) -> None:
        self._timed("set", self.inner.set, key, value)

    def delete(self, key: str) -> None:
        self._timed("delete", self.inner.delete, key)

    def keys(self, prefix: str) -> list[str]:
        return self._timed("keys", self.inner.keys, prefix)  # type: ignore[no-any-return]

    def describe(self, key: str) -> str:
        return describe(self.inner, key)


def describe(store: Any, key: str) -> str:
    """How a user finds and removes ``key`` in ``store``."""
    method = getattr(store, "describe", None)
    return method(key) if method is not None else f"the record {key!r}"


class MetadataVariableStore:
    """Airflow Variables read and written through the metadata database.

    Outside any task (the command line, where ``airflow variables ...`` runs): a task goes through
    :class:`VariableStore` instead.
    """

    # The metadata database's models are imported only here, when the command line runs: a DAG file or a
    # task never loads them.

    def get(self, key: str) -> Any:
        from airflow.models.variable import Variable as VariableModel

        return VariableModel.get(key, default_var=None, deserialize_json=True)

    def set(self, key: str, value: Any) -> None:
        from airflow.models.variable import Variable as VariableModel

        VariableModel.set(key, value, serialize_json=True)

    def delete(self, key: str) -> None:
        from airflow.models.variable import Variable as VariableModel

        VariableModel.delete(key)

    def keys(self, prefix: str) -> list[str]:
        return _metadata_variable_keys(prefix)

    def describe(self, key: str) -> str:
        return f"the Airflow Variable {key!r} (airflow variables delete {key})"


def asset_state_entries(prefix: str) -> list[tuple[str, str, Any]]:
    """``(asset URI, key, value)`` of every Asset state-store entry whose key starts with ``prefix``.

    Read from the metadata database (Airflow 3.3+; ``[]`` before). For the command line: a task cannot list these.
    """
    out: list[tuple[str, str, Any]] = []
    for uri, key, value in _metadata_asset_state_rows(prefix):
        try:
            out.append((uri, key, json.loads(value)))
        except (TypeError, ValueError):
            log.warning("The state-store entry %s of the Asset %s is not JSON; skipped", key, uri)
    return sorted(out)


def task_state_store(context: Any) -> Any:
    """Return the running task instance's ``context["task_state_store"]`` (AIP-103, Airflow 3.3+).

    ``None`` where Airflow has none (before 3.3; callers then keep their records in Variables).
    """
    if not AIRFLOW_V_3_3_PLUS:
        return None
    getter = getattr(context, "get", None)
    return getter("task_state_store") if getter is not None else None


def _metadata_variable_keys(prefix: str) -> list[str]:
    """Return the keys of the Variables starting with ``prefix``, read from the metadata database."""
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(VariableModel.key).filter(VariableModel.key.startswith(prefix)).all()
    return sorted(row[0] for row in rows)


def _metadata_asset_state_rows(prefix: str) -> list[tuple[str, str, str]]:
    """Return ``(asset URI, key, JSON text)`` of the Asset state-store entries whose key starts with ``prefix``.

    Airflow 3.3's ``asset_state_store`` table; ``[]`` before 3.3, which has none.
    """
    if not AIRFLOW_V_3_3_PLUS:
        return []
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetModel.uri, AssetStateStoreModel.key, AssetStateStoreModel.value)
                .join(AssetModel, AssetModel.id == AssetStateStoreModel.asset_id)
                .filter(AssetStateStoreModel.key.startswith(prefix)).all())
    return [(str(uri), str(key), str(value)) for uri, key, value in rows]
