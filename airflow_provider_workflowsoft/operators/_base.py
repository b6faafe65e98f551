"""What every Workflowsoft operator and sensor shares.

The connection id, one hook, the records of the running task instance, and the rule that bad input fails a task without
retries.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import to_jsonable
from airflow_provider_workflowsoft.api.protocol import renamed_argument
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.metrics import StatsRecorder, recorder
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.creates import CreateLedger, create_store_for
from airflow_provider_workflowsoft.records.stores import CountingStore, KeyValueStore, VariableStore
from airflow_provider_workflowsoft.version_compat import AirflowFailException

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def fails_without_retries(method: F) -> F:
    """Fail the task without retries when ``method`` raises a :class:`WorkflowsoftInputError`.

    Applied to every ``execute``, ``poke`` and ``execute_complete``: bad input can never succeed, so it
    becomes Airflow's ``AirflowFailException`` with the same message; the original error is its cause
    (``__cause__``), shown in the task's log.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except WorkflowsoftInputError as exc:
            raise AirflowFailException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class WorkflowsoftTaskMixin:
    """Mixed into the sensor and the operators (before Airflow's base class).

    ``ledger_store`` is where the claims (and, on Airflow before 3.3, the create records) live: ``None``
    means Airflow Variables. It is not a documented argument: tests pass ``ledger_store=MemoryStore()``
    to the constructor, which takes it out of the keyword arguments (:meth:`_take_ledger_store`).
    """

    workflowsoft_conn_id: str
    ledger_store: Any = None
    _hook: WorkflowsoftHook | None = None
    _counting: CountingStore | None = None
    _metrics: StatsRecorder | Literal[False] | None = None

    def _take_ledger_store(self, kwargs: dict[str, Any]) -> None:
        """Take the test-only ``ledger_store`` out of a constructor's keyword arguments."""
        store = kwargs.pop("ledger_store", None)
        if store is not None:
            self.ledger_store = store

    def _hook_options(self) -> dict[str, Any]:
        return {}

    @property
    def hook(self) -> WorkflowsoftHook:
        """One hook per task (one client: one token per lifetime, pooled connections)."""
        if self._hook is None:
            self._hook = WorkflowsoftHook(self.workflowsoft_conn_id, client_options=self._hook_options())
        return self._hook

    def metrics(self) -> StatsRecorder | None:
        """Return what sends this task's metrics (``None`` when Airflow sends none)."""
        if self._metrics is None:
            self._metrics = recorder() or False
        return self._metrics or None

    def _store(self) -> CountingStore:
        """Return the records' store, wrapped to count round trips (reported by the batch worker, and as metrics)."""
        inner: KeyValueStore = self.ledger_store if self.ledger_store is not None else VariableStore()
        if self._counting is None or (self._counting.inner is not inner and self.ledger_store is not None):
            metrics = self.metrics()
            self._counting = CountingStore(inner, on_call=metrics.store_call if metrics is not None else None)
        return self._counting

    def report_claims(self, claims: ClaimsLedger, step: Any, reclaimed: int = 0) -> None:
        """Send the metrics of the claims after a drain.

        The instances offered again, the open claims per step and the oldest one's age (one extra read of the records,
        made only when Airflow sends metrics).
        """
        metrics = self.metrics()
        if metrics is not None:
            metrics.claims_after_drain(claims, step, reclaimed)

    def report_prepared(self, claims: ClaimsLedger, step: Any) -> None:
        """Metrics of what ``claims.prepare_drain`` found: instances parked, drains killed while polling."""
        metrics = self.metrics()
        if metrics is not None:
            metrics.drain_prepared(step, claims.parked, claims.interrupted)

    def store_round_trips(self) -> int:
        return self._counting.round_trips if self._counting is not None else 0

    def store_write_ms(self) -> float:
        """Return the mean duration of one record write in this task (the claim window's length), in ms."""
        return round(self._counting.mean_ms("set"), 2) if self._counting is not None else 0.0

    def claims_for(self, context: Any) -> ClaimsLedger:
        """Return the claims ledger of the running task instance."""
        return ClaimsLedger(self.workflowsoft_conn_id, self._store(), owner=naming.owner_from_context(context))

    def run_create_once(
        self, context: Any, send: Callable[[], dict[str, Any]], *, what: str, allow_duplicates: bool = False
    ) -> dict[str, Any]:
        """Send a create at most once per task instance (see :mod:`~airflow_provider_workflowsoft.records.creates`)."""
        store, key = create_store_for(context, self.ledger_store)
        return CreateLedger(store).run_once(key, send, what=what, allow_duplicates=allow_duplicates)

    def create_notice(self, context: Any, spec: Any, *, title: str, listing: str) -> dict[str, Any]:
        """Create one Workflowsoft task for a person (at most once per task instance).

        ``spec`` is ``{"title", "assignee", "description", "on_behalf_of"}`` (each optional; ``title`` defaults to
        ``title``), ``listing`` is added to its description. Returns the task created (JSON-safe).
        """
        spec = dict(checked_notice(spec, "the notice", rendered=True) or {})
        title = str(spec.get("title") or title)
        description = "\n\n".join(p for p in (spec.get("description"), listing) if p)
        assignee = spec.get("assignee")
        on_behalf_of = spec.get("on_behalf_of")
        client = self.hook.client

        def send() -> dict[str, Any]:
            user, creator = client.task_people(assignee, on_behalf_of, alert=True)
            return client.create_task(title, assigned_user_id=user, description=description, on_behalf_of=creator)

        task = self.run_create_once(context, send, what=f"task {title!r}")
        return to_jsonable(task)  # type: ignore[no-any-return]

    def _step_argument(self, integration_step_id: Any, integration_diagram_id: Any) -> Any:
        """``integration_step_id``, or its 0.1 name ``integration_diagram_id`` (with a deprecation warning)."""
        return renamed_argument(integration_step_id, integration_diagram_id, new="integration_step_id",
                                old="integration_diagram_id", owner=type(self).__name__)

    def resolve_integration_step(self, step_id: Any, process_diagram_name: Any, integration_step_name: Any) -> int:
        """Return the integration step's id: as given, or looked up by names (:meth:`StepRef.resolve`)."""
        return StepRef(step_id, process_diagram_name, integration_step_name).resolve(self.hook.client)


#: What a notice (``notify_on_failure``, ``notify_on_park``) may say.
NOTICE_KEYS = ("title", "assignee", "description", "on_behalf_of")


def checked_notice(value: Any, name: str, *, rendered: bool = False) -> Any:
    """Check a notice's spec before anything is sent.

    The spec is ``None``, a template string (until ``rendered``: checked
    again when the task runs), or a dict of :data:`NOTICE_KEYS` (a misspelt key would silently leave the task
    unassigned).
    """
    if value is None or (isinstance(value, str) and not rendered):
        return value
    if not isinstance(value, dict):
        raise WorkflowsoftInputError(
            f"{name} must be a dict like {{'title': ..., 'assignee': ..., 'description': ..., 'on_behalf_of': ...}}, "
            f"got {value!r}")
    unknown = sorted(str(k) for k in value if k not in NOTICE_KEYS)
    if unknown:
        raise WorkflowsoftInputError(
            f"{name} has unknown key(s) {', '.join(repr(k) for k in unknown)}: the keys are {', '.join(NOTICE_KEYS)}")
    return value


def parked_listing(parked: list[Any], max_offers: Any) -> str:
    """Return the part of a notice that names parked instances and what to do about them."""
    return (f"Parked integration instances (handed out {max_offers} times without being completed; not offered "
            f"again until released): {', '.join(str(i) for i in parked)}.\nCheck them in Workflowsoft, then release "
            "them (WorkflowsoftReleaseClaimsOperator, or `workflowsoft-claims release <id>`) to offer them again, or "
            "forget them once handled there.")
