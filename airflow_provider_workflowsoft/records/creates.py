"""Create records: a process start or a task creation is sent at most once per task instance.

Before sending, the intent is recorded (``sending``); after the answer, the result (``done``). A retry that
finds ``done`` returns the recorded result; one that finds ``sending`` (the answer was lost) does not send
again but fails with what to check. Unlike Airflow's ``ResumableJobMixin`` (which stores the external id
after submitting), the intent is written first, so a crash between sending and recording cannot resend.

Where: on Airflow 3.3 and later, the task instance's own ``task_state_store`` (survives retries, not shown
among Variables); on older Airflow, one Airflow Variable per task instance
(``workflowsoft.create.<dag>.<run>.<task>.<map index>``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftConnectionError,
    WorkflowsoftError,
    WorkflowsoftInputError,
    WorkflowsoftTransientError,
    WorkflowsoftUnknownOutcomeError,
)
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.stores import (
    KeyValueStore,
    TaskStateStore,
    VariableStore,
    describe,
    task_state_store,
)

log = logging.getLogger(__name__)

SENDING = "sending"
DONE = "done"

#: The key of the create record inside a task instance's ``task_state_store``.
TASK_STATE_KEY = "workflowsoft.create"


class DuplicateRiskError(WorkflowsoftInputError):
    """A previous try of this task sent a create whose outcome is unknown; it is not sent again."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CreateLedger:
    """Idempotency records of creates (process starts, tasks).

    :param store: where records live (see :func:`create_store_for`)
    """

    def __init__(self, store: KeyValueStore, clock: Callable[[], dt.datetime] = _now) -> None:
        self.store = store
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
            raise DuplicateRiskError(self._duplicate_message(what, key, record))
        self.store.set(key, {"state": SENDING, "what": what, "sent_at": self.clock().isoformat()})
        try:
            result = send()
        except WorkflowsoftUnknownOutcomeError as exc:
            raise DuplicateRiskError(f"{exc} " + self._duplicate_message(what, key, {}, first=True)) from None
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
        self.store.set(key, {"state": DONE, "what": what, "created_at": self.clock().isoformat(), "result": result})
        return result

    def forget(self, key: str) -> None:
        """Drop a record (after checking by hand that the create did not happen)."""
        self.store.delete(key)

    def _duplicate_message(self, what: str, key: str, record: dict[str, Any], first: bool = False) -> str:
        when = record.get("sent_at", "an earlier try")
        # After an unknown outcome the error itself already says that it was not sent again.
        lead = "" if first else (f"An earlier try of this task sent {what} at {when}, but its answer was lost. "
                                 "To avoid a duplicate, it is not sent again. ")
        return (
            f"{lead}Check in Workflowsoft whether {what} exists. If it does not, delete "
            f"{describe(self.store, key)} and clear the task, or set allow_duplicates=True on the operator."
        )


def create_store_for(context: Any, fallback: KeyValueStore | None = None) -> tuple[KeyValueStore, str]:
    """``(store, key)`` of the running task instance's create record.

    Airflow 3.3+: its ``task_state_store`` under :data:`TASK_STATE_KEY`; otherwise ``fallback`` (Airflow
    Variables by default) under :func:`~.naming.create_key`.
    """
    owner = naming.owner_from_context(context)
    accessor = task_state_store(context)
    if fallback is None and accessor is not None:
        ti = context["ti"]
        where = f"/api/v2/dags/{ti.dag_id}/dagRuns/{ti.run_id}/taskInstances/{ti.task_id}/state-store"
        if getattr(ti, "map_index", -1) not in (None, -1):
            where += f" (map index {ti.map_index})"
        return TaskStateStore(accessor, where), TASK_STATE_KEY
    return (fallback if fallback is not None else VariableStore()), naming.create_key(owner)


__all__ = ["DONE", "SENDING", "TASK_STATE_KEY", "CreateLedger", "DuplicateRiskError", "create_store_for"]
