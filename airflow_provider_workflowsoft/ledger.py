"""Durable records in Airflow's own store so that no integration instance is lost and nothing is created twice.

Two ledgers, both kept in Airflow Variables:

* :class:`ClaimsLedger` - every integration instance the sensor (or trigger, through the sensor's
  ``execute_complete``) receives is recorded as *claimed* before anything else happens to it; the
  completion marks it *done*. Before polling, the sensor re-offers claims older than a lease
  (``reclaim_after``): an instance received by a run that later failed or was killed is picked up by
  a later run instead of waiting in Workflowsoft forever.
* :class:`CreateLedger` - ``start_process`` and ``create_task`` record an idempotency key per task
  instance (dag id, run id, task id, map index) before sending, and the result after. A retry after a
  known success returns the recorded result; a retry after an unknown outcome does not resend.

Why Variables: they are read and written through Airflow's public API from any executor (Airflow 3
routes them through the API server; 2.11 through the metadata database), survive task retries (XCom of a
task is cleared when it retries) and can be seen and edited with ``airflow variables`` or the UI.
One Variable per instance keeps concurrent writers (mapped completions) from overwriting each other;
a small per-step index (written only by the sensor) lets the sensor find its claims again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from airflow_provider_workflowsoft.errors import (
    WorkflowsoftConnectionError,
    WorkflowsoftError,
    WorkflowsoftInputError,
    WorkflowsoftTransientError,
    WorkflowsoftUnknownOutcomeError,
)
from airflow_provider_workflowsoft.protocol import coerce_id as _instance_id

log = logging.getLogger(__name__)

PREFIX = "workflowsoft"
CLAIMED = "claimed"
COMPLETING = "completing"
DONE = "done"

#: Done records are kept this long (so a late retry still sees "already completed"), then pruned.
DONE_RETENTION = dt.timedelta(days=7)


class KeyValueStore(Protocol):
    """What the ledgers need from a store: JSON values by string key."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class VariableStore:
    """Airflow Variables as a JSON key-value store (the default store)."""

    def get(self, key: str) -> Any:
        from airflow_provider_workflowsoft._compat import Variable

        return Variable.get(key, default=None, deserialize_json=True)

    def set(self, key: str, value: Any) -> None:
        from airflow_provider_workflowsoft._compat import Variable

        Variable.set(key, value, serialize_json=True)

    def delete(self, key: str) -> None:
        from airflow_provider_workflowsoft._compat import Variable

        try:
            Variable.delete(key)
        except Exception as exc:  # deleting what is already gone is not an error here
            log.debug("Variable %s not deleted: %s", key, exc)


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _safe(part: Any) -> str:
    """Variable keys keep to letters, digits and ``._-`` (run ids hold ``:`` and ``+``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(part))


class ClaimsLedger:
    """Claims of integration instances, per Airflow connection.

    Keys: ``workflowsoft.claim.<conn_id>.<instance id>`` holds one claim;
    ``workflowsoft.claims.<conn_id>.<integration diagram id>`` the list of claimed instance ids of a step;
    ``workflowsoft.claims.<conn_id>`` the list of steps with claims.

    :param conn_id: the Workflowsoft connection id (instances ids are unique per tenant)
    :param store: where records live (Airflow Variables by default)
    :param clock: the current time (tests inject one)
    """

    def __init__(
        self,
        conn_id: str,
        store: KeyValueStore | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.conn_id = conn_id
        self.store: KeyValueStore = store if store is not None else VariableStore()
        self.clock = clock
        # Records and step indexes this ledger object last read or wrote. Every Variable is a round trip
        # through the API server; read-modify-write updates of a record this object just handled
        # (claim -> completing -> done) need no second read. Lookups that decide anything (get, state,
        # reclaim, list_claims) always read the store.
        self._known: dict[str, dict[str, Any]] = {}
        self._known_lists: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    # -- keys ---------------------------------------------------------------------------------------

    def claim_key(self, instance_id: Any) -> str:
        return f"{PREFIX}.claim.{_safe(self.conn_id)}.{_safe(_instance_id(instance_id))}"

    def index_key(self, integration_diagram_id: Any) -> str:
        return f"{PREFIX}.claims.{_safe(self.conn_id)}.{_safe(integration_diagram_id)}"

    def steps_key(self) -> str:
        return f"{PREFIX}.claims.{_safe(self.conn_id)}"

    # -- records ------------------------------------------------------------------------------------

    def get(self, instance_id: Any) -> dict[str, Any] | None:
        """The claim record of an instance, or ``None`` (always read from the store)."""
        key = self.claim_key(instance_id)
        record = self.store.get(key)
        if not isinstance(record, dict):
            self._known.pop(key, None)
            return None
        self._known[key] = record
        return dict(record)

    def _put(self, key: str, record: dict[str, Any]) -> None:
        self.store.set(key, record)
        self._known[key] = record

    def _delete(self, key: str) -> None:
        self.store.delete(key)
        self._known.pop(key, None)

    def _list(self, key: str) -> list[Any]:
        if key not in self._known_lists:
            self._known_lists[key] = list(self.store.get(key) or [])
        return self._known_lists[key]

    def _put_list(self, key: str, values: list[Any]) -> None:
        self.store.set(key, values)
        self._known_lists[key] = list(values)

    def state(self, instance_id: Any) -> str | None:
        record = self.get(instance_id)
        return record.get("state") if record else None

    def is_done(self, instance_id: Any) -> bool:
        return self.state(instance_id) == DONE

    def claim(self, integration_diagram_id: Any, instances: Iterable[dict[str, Any]], *, owner: str = "") -> None:
        """Record ``instances`` (poll results) as claimed, before anything else is done with them."""
        instances = list(instances)
        if not instances:
            return
        now = _iso(self.clock())
        for instance in instances:
            iid = _instance_id(instance)
            previous = self.get(iid) or {}
            self._put(
                self.claim_key(iid),
                {
                    "state": CLAIMED,
                    "integration_instance_id": iid,
                    "process_instance_id": instance.get("ProcessInstanceId"),
                    "integration_diagram_id": integration_diagram_id,
                    "claimed_at": now,
                    "first_claimed_at": previous.get("first_claimed_at", now),
                    "offers": int(previous.get("offers", 0)) + 1,
                    "owner": owner,
                },
            )
        self._index_add(integration_diagram_id, [_instance_id(i) for i in instances])

    def _index_add(self, integration_diagram_id: Any, ids: list[int | str]) -> None:
        # The index is written by one sensor (or batch run) at a time, so what this object last read or
        # wrote is current: one store read per step and ledger object, then writes only.
        key = self.index_key(integration_diagram_id)
        with self._lock:
            index = self._list(key)
            merged = list(dict.fromkeys([*index, *ids]))
            if merged != index:
                self._put_list(key, merged)
            steps = self._list(self.steps_key())
            if integration_diagram_id not in steps:
                self._put_list(self.steps_key(), [*steps, integration_diagram_id])

    def mark_completing(self, instance_id: Any) -> None:
        """About to send the completion (its answer may be lost: a retry then accepts "already completed")."""
        self._update(instance_id, state=COMPLETING, completing_at=_iso(self.clock()))

    def mark_done(self, instance_id: Any, result: Any = None) -> None:
        """The step is completed in Workflowsoft."""
        self._update(instance_id, state=DONE, completed_at=_iso(self.clock()), result=result)

    def _update(self, instance_id: Any, **changes: Any) -> None:
        iid = _instance_id(instance_id)
        key = self.claim_key(iid)
        known = self._known.get(key)
        record = dict(known) if known is not None else self.get(iid)
        record = record or {"integration_instance_id": iid, "claimed_at": _iso(self.clock())}
        record.update(changes)
        self._put(key, record)

    def reclaim(self, integration_diagram_id: Any, reclaim_after: dt.timedelta | None, *, owner: str = "",
                limit: int | None = None) -> list[dict[str, Any]]:
        """Claims of this step not done and older than ``reclaim_after``: renewed and returned as
        instances (``IntegrationInstanceId``, ``ProcessInstanceId``, ``reclaimed: True``) to offer again.
        Done records past :data:`DONE_RETENTION` and ids without a record are pruned from the index."""
        key = self.index_key(integration_diagram_id)
        index = self.store.get(key) or []
        self._known_lists[key] = list(index)
        now = self.clock()
        keep: list[int | str] = []
        offered: list[dict[str, Any]] = []
        for iid in index:
            record = self.get(iid)
            if record is None:
                continue
            if record.get("state") == DONE:
                completed = _parse(record.get("completed_at")) or now
                if now - completed > DONE_RETENTION:
                    self._delete(self.claim_key(iid))
                    continue
                keep.append(iid)
                continue
            keep.append(iid)
            if reclaim_after is None or (limit is not None and len(offered) >= limit):
                continue
            claimed = _parse(record.get("claimed_at")) or now
            if now - claimed >= reclaim_after:
                offered.append(
                    {"IntegrationInstanceId": iid, "ProcessInstanceId": record.get("process_instance_id"),
                     "reclaimed": True}
                )
        if keep != index:
            self._put_list(key, keep)
        if offered:
            for instance in offered:
                self._update(
                    instance["IntegrationInstanceId"],
                    state=CLAIMED,
                    claimed_at=_iso(now),
                    owner=owner,
                    offers=int((self.get(instance["IntegrationInstanceId"]) or {}).get("offers", 0)) + 1,
                )
            log.warning("Re-offering %d claimed but uncompleted integration instance(s) of step %s: %s",
                        len(offered), integration_diagram_id, [i["IntegrationInstanceId"] for i in offered])
        return offered

    def list_claims(self, integration_diagram_id: Any = None, *, include_done: bool = False) -> list[dict[str, Any]]:
        """Claim records of one step (or of every step with claims)."""
        steps = [integration_diagram_id] if integration_diagram_id is not None else (
            self.store.get(self.steps_key()) or [])
        records = []
        for step in steps:
            for iid in self.store.get(self.index_key(step)) or []:
                record = self.get(iid)
                if record and (include_done or record.get("state") != DONE):
                    records.append(record)
        return records

    def release(self, instance_ids: Iterable[Any]) -> list[int | str]:
        """Forget claims (the instances will not be re-offered). Returns the ids released."""
        released = []
        for instance_id in instance_ids:
            iid = _instance_id(instance_id)
            record = self.get(iid)
            if record is None:
                continue
            self._delete(self.claim_key(iid))
            step = record.get("integration_diagram_id")
            if step is not None:
                index = self.store.get(self.index_key(step)) or []
                if iid in index:
                    self._put_list(self.index_key(step), [i for i in index if i != iid])
            released.append(iid)
        return released


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------------
# Creates
# ---------------------------------------------------------------------------------------------------

SENDING = "sending"


class DuplicateRiskError(WorkflowsoftInputError):
    """A previous try of this task sent a create whose outcome is unknown; it is not sent again."""


def idempotency_key(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """``workflowsoft.create.<dag>.<run>.<task>.<map index>``; one per task instance."""
    index = -1 if map_index is None else map_index
    return f"{PREFIX}.create.{_safe(dag_id)}.{_safe(run_id)}.{_safe(task_id)}.{index}"


def key_from_context(context: Any) -> str:
    """The idempotency key of the running task instance."""
    ti = context["ti"]
    return idempotency_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))


class CreateLedger:
    """Idempotency records of creates (process starts, tasks).

    :param store: where records live (Airflow Variables by default)
    """

    def __init__(self, store: KeyValueStore | None = None, clock: Callable[[], dt.datetime] = _now) -> None:
        self.store: KeyValueStore = store if store is not None else VariableStore()
        self.clock = clock

    def run_once(
        self,
        key: str,
        send: Callable[[], dict[str, Any]],
        *,
        what: str,
        allow_duplicates: bool = False,
    ) -> dict[str, Any]:
        """Send a create at most once per ``key``.

        * a recorded success: its result is returned, nothing is sent;
        * a recorded send whose outcome is unknown: :class:`DuplicateRiskError` telling what to check,
          unless ``allow_duplicates``;
        * otherwise the intent is recorded, ``send()`` runs, and its result is recorded. When ``send()``
          fails in a way that proves nothing was created (bad input, connection refused, 429/503 after
          retries), the record is removed so that a retry sends again.

        :param what: what is created, for messages ("process 'Invoice approval' (diagram 3)")
        """
        record = self.store.get(key)
        if isinstance(record, dict) and record.get("state") == DONE:
            log.info("%s was already created by an earlier try (%s); returning the recorded result", what, key)
            return dict(record.get("result") or {})
        if isinstance(record, dict) and record.get("state") == SENDING and not allow_duplicates:
            raise DuplicateRiskError(_duplicate_message(what, key, record))
        self.store.set(key, {"state": SENDING, "what": what, "sent_at": _iso(self.clock())})
        try:
            result = send()
        except WorkflowsoftUnknownOutcomeError as exc:
            raise DuplicateRiskError(
                f"{exc} "
                + _duplicate_message(what, key, self.store.get(key) or {}, first=True)
            ) from None
        except WorkflowsoftConnectionError as exc:
            if not exc.sent:
                self.store.delete(key)
            raise
        except (WorkflowsoftInputError, WorkflowsoftTransientError) as exc:
            # Refused input, 401/404, or 429/503 after every retry: the server did not create anything.
            if not (isinstance(exc, WorkflowsoftTransientError) and exc.status not in (429, 503)):
                self.store.delete(key)
            raise
        except WorkflowsoftError:
            raise
        self.store.set(key, {"state": DONE, "what": what, "created_at": _iso(self.clock()), "result": result})
        return result

    def forget(self, key: str) -> None:
        """Drop a record (after checking by hand that the create did not happen)."""
        self.store.delete(key)


def _duplicate_message(what: str, key: str, record: dict[str, Any], first: bool = False) -> str:
    when = record.get("sent_at", "an earlier try")
    # After an unknown outcome the error itself already says that it was not sent again.
    lead = "" if first else (f"An earlier try of this task sent {what} at {when}, but its answer was lost. "
                             "To avoid a duplicate, it is not sent again. ")
    return (
        f"{lead}Check in Workflowsoft whether {what} exists. "
        f"If it does not, delete the Airflow Variable {key!r} (airflow variables delete {key}) and clear "
        "the task, or set allow_duplicates=True on the operator."
    )
