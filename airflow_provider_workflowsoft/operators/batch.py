"""Process many integration instances in one task: the batch worker operator and its engine.

The shape of a Camunda/Zeebe job worker: you write a function of one instance's fields that returns the
values to write; the operator drains new instances, runs the function for each with bounded
concurrency, writes the values and completes each step.

.. code-block:: python

    def enrich(fields, instance):
        return {"Event exists": True, "Venue code": lookup_venue(fields["Event name"])}

    WorkflowsoftProcessInstancesOperator(
        task_id="enrich_events", python_callable=enrich, integration_diagram_id=11, max_workers=8
    )

The callable is called as ``python_callable(fields, instance=instance, **op_kwargs)``:

* ``fields`` - ``{label: value}`` of the instance, typed (``datetime``, ``Decimal``, ``bool``, ``int``...);
* ``instance`` - ``{"IntegrationInstanceId": ..., "ProcessInstanceId": ...}`` (plus ``"reclaimed": True``
  when a claim of an earlier run is offered again). A callable without an ``instance`` parameter (and
  without ``**kwargs``) is called without it;
* it returns the values to write (labels, keys or ``field_<key>`` names -> values), or ``None`` to
  complete the step without writing anything.

Per instance exactly these requests are sent: the poll that received it (none when ``instances`` are
given), one read of its fields, one write (skipped when there is nothing to write) and one completion.
All go through one hook: one token, one pool of ``max_workers + pollers`` keep-alive connections.

Every received instance is claimed in the :class:`~airflow_provider_workflowsoft.ledger.ClaimsLedger`
at once, marked *completing* before its completion is sent and *done* after. One failing instance does
not stop the others; when any failed, the task fails naming each of them, and the failed ones stay
claimed, so a later run (after ``reclaim_after``) offers them again.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_workflowsoft._compat import AirflowException, BaseOperator, Context

if TYPE_CHECKING:  # the rest is imported when a task runs, so that DAG files parse fast
    import concurrent.futures

    from airflow_provider_workflowsoft.fields import Field
    from airflow_provider_workflowsoft.ledger import ClaimsLedger, KeyValueStore

# ClaimsLedger states (kept equal to airflow_provider_workflowsoft.ledger.COMPLETING/DONE; checked by tests)
COMPLETING = "completing"
DONE = "done"


def _checked_sizes(max_workers: int, pollers: int | None, max_instances: int) -> int:
    """Refuse impossible sizes (a ``ValueError`` that fails the task without retries); return the pollers.

    ``pollers`` defaults to ``max_workers``: one poller alone caps throughput at one poll round trip per
    instance, whatever the number of workers."""
    pollers = max_workers if pollers is None else pollers
    if max_workers < 1:
        raise _input_error(f"max_workers must be 1 or more, got {max_workers}")
    if pollers < 1:
        raise _input_error(f"pollers must be 1 or more, got {pollers}")
    if max_instances < 0:
        raise _input_error(f"max_instances must be 0 or more, got {max_instances}")
    return pollers


def _input_error(message: str) -> Exception:
    """A WorkflowsoftInputError (fails the task without retries), imported only when needed."""
    from airflow_provider_workflowsoft.errors import WorkflowsoftInputError as error

    return error(message)

log = logging.getLogger(__name__)

#: Longest error text kept per failed instance in the report (XCom stays small).
MAX_ERROR_CHARS = 2000


class InstanceApi(Protocol):
    """What the engine needs: a :class:`~.hooks.workflowsoft.WorkflowsoftHook` or a ``WorkflowsoftClient``."""

    def poll_new_integration(self, integration_diagram_id: int | str) -> dict[str, Any] | None: ...

    def get_fields(self, integration_instance_id: Any) -> list[Field]: ...

    def update_and_complete(
        self,
        integration_instance_id: Any,
        values: Mapping[str, Any] | None,
        *,
        fields: list[Field] | None = None,
        on_behalf_of: str | None = None,
        already_completed_ok: bool = False,
    ) -> dict[str, Any]: ...


def _instance_id(raw: Any) -> int | str:
    value = raw.get("IntegrationInstanceId") if isinstance(raw, Mapping) else raw
    if isinstance(value, bool) or value is None:
        raise _input_error(f"Not an integration instance (id or dict with IntegrationInstanceId): {raw!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if not text:
        raise _input_error(f"Not an integration instance (id or dict with IntegrationInstanceId): {raw!r}")
    return text


def normalise_instances(instances: Any) -> list[dict[str, Any]]:
    """Instance dicts from a list of ids or dicts (a sensor's XCom), deduplicated, order kept."""
    if instances is None:
        return []
    if isinstance(instances, str) and instances.strip()[:1] in ("[", "{"):
        instances = json.loads(instances)  # a list rendered by a Jinja template
    if isinstance(instances, Mapping | str | int):
        instances = [instances]
    result: dict[int | str, dict[str, Any]] = {}
    for raw in instances:
        iid = _instance_id(raw)
        if iid in result:
            continue
        item: dict[str, Any] = {"IntegrationInstanceId": iid}
        if isinstance(raw, Mapping):
            if raw.get("ProcessInstanceId") is not None:
                item["ProcessInstanceId"] = raw["ProcessInstanceId"]
            if raw.get("reclaimed"):
                item["reclaimed"] = True
        result[iid] = item
    return list(result.values())


def _accepts_instance(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "instance" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class BatchEngine:
    """Drain, claim and process integration instances with bounded concurrency (no Airflow in it).

    :param api: the hook (or client) every request goes through
    :param python_callable: ``f(fields, instance=..., **op_kwargs) -> dict | None``
    :param integration_diagram_id: the step to poll (needed unless ``instances`` are given)
    :param ledger: the claims ledger (``None``: no claims are recorded)
    :param max_workers: callables running at the same time
    :param pollers: threads polling at the same time (default: ``max_workers``, so that polling keeps up
        with the workers; 1 polls from the calling thread only)
    """

    def __init__(
        self,
        api: InstanceApi,
        python_callable: Callable[..., Any],
        *,
        integration_diagram_id: int | str | None = None,
        ledger: ClaimsLedger | None = None,
        max_instances: int = 100,
        max_workers: int = 8,
        pollers: int | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        reclaim_after: dt.timedelta | None = dt.timedelta(hours=1),
        owner: str = "",
    ) -> None:
        pollers = _checked_sizes(max_workers, pollers, max_instances)
        self.api = api
        self.python_callable = python_callable
        self.integration_diagram_id = integration_diagram_id
        self.ledger = ledger
        self.max_instances = max_instances
        self.max_workers = max_workers
        self.pollers = pollers
        self.op_kwargs = dict(op_kwargs or {})
        self.reclaim_after = reclaim_after
        self.owner = owner
        self._pass_instance = _accepts_instance(python_callable)
        self._ledger_lock = threading.Lock()  # one ledger writer at a time (the store may not be thread-safe)
        self._drain_lock = threading.Lock()

    # -- ledger (serialised) ------------------------------------------------------------------------

    def _ledger_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.ledger is None:
            return None
        with self._ledger_lock:
            return getattr(self.ledger, name)(*args, **kwargs)

    # -- one instance -------------------------------------------------------------------------------

    def process_one(self, instance: dict[str, Any], *, already_completed_ok: bool = False) -> dict[str, Any]:
        """Read, call, write and complete one instance; returns ``{"IntegrationInstanceId", "fields"}``."""
        from airflow_provider_workflowsoft.fields import field_values, to_jsonable

        iid = instance["IntegrationInstanceId"]
        fields = self.api.get_fields(iid)
        kwargs = dict(self.op_kwargs)
        if self._pass_instance:
            kwargs["instance"] = dict(instance)
        values = self.python_callable(field_values(fields), **kwargs)
        if values is not None and not isinstance(values, Mapping):
            raise _input_error(
                f"The callable returned {type(values).__name__} for integration instance {iid}; "
                "return a dict of field values to write, or None to complete without writing"
            )
        self._ledger_call("mark_completing", iid)
        outcome = self.api.update_and_complete(iid, values, fields=fields, already_completed_ok=already_completed_ok)
        written = to_jsonable(outcome.get("fields") or {})
        self._ledger_call("mark_done", iid, result=written)
        return {"IntegrationInstanceId": iid, "fields": written,
                "already_completed": bool(outcome.get("already_completed"))}

    # -- the run ------------------------------------------------------------------------------------

    def run(self, instances: Sequence[Any] | None = None) -> dict[str, Any]:
        """Process ``instances`` (ids or dicts), or drain new ones (reclaimed claims first, then polls).

        :return: the JSON-safe report ``{"processed", "succeeded", "failed", "results", "skipped", ...}``
        """
        import concurrent.futures

        started = time.monotonic()
        report: dict[str, Any] = {"processed": 0, "succeeded": [], "failed": [], "results": {}, "skipped": []}
        futures: dict[concurrent.futures.Future[dict[str, Any]], dict[str, Any]] = {}
        poll_error: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="workflowsoft-worker") as pool:

            def submit(instance: dict[str, Any], already_ok: bool = False) -> None:
                futures[pool.submit(self.process_one, instance, already_completed_ok=already_ok)] = instance

            if instances is not None:
                self._offer_given(normalise_instances(instances), submit, report)
                received = len(futures)
            else:
                received = self._drain(submit, poll_error)
            for future in concurrent.futures.as_completed(list(futures)):
                instance = futures[future]
                iid = instance["IntegrationInstanceId"]
                try:
                    outcome = future.result()
                except Exception as exc:
                    log.error("Integration instance %s failed: %s", iid, _error_text(exc))
                    report["failed"].append({"IntegrationInstanceId": iid, "error": _error_text(exc)})
                    continue
                report["succeeded"].append(iid)
                report["results"][str(iid)] = outcome["fields"]
        report["processed"] = len(futures)
        report["received"] = received
        report["succeeded"].sort(key=str)
        report["failed"].sort(key=lambda f: str(f["IntegrationInstanceId"]))
        if poll_error:
            report["poll_error"] = poll_error[0]
        report["seconds"] = round(time.monotonic() - started, 3)
        return report

    def _offer_given(self, given: list[dict[str, Any]], submit: Callable[..., None], report: dict[str, Any]) -> None:
        unclaimed = []
        for instance in given:
            state = self._ledger_call("state", instance["IntegrationInstanceId"])
            if state == DONE:
                report["skipped"].append(instance["IntegrationInstanceId"])
                continue
            if state is None:
                unclaimed.append(instance)
            submit(instance, state == COMPLETING)
        if unclaimed and self.integration_diagram_id is not None:
            self._ledger_call("claim", self.integration_diagram_id, unclaimed, owner=self.owner)

    def _drain(self, submit: Callable[..., None], poll_error: list[str]) -> int:
        """Reclaimed claims first, then polls until an empty answer, a repeated instance or the limit."""
        if self.integration_diagram_id is None:
            raise _input_error("Nothing to poll: set integration_diagram_id (or the diagram and step names)")
        step = self.integration_diagram_id
        seen: set[int | str] = set()
        count = 0
        if self.max_instances and self.reclaim_after is not None:
            reclaimed = self._ledger_call("reclaim", step, self.reclaim_after, owner=self.owner,
                                          limit=self.max_instances) or []
            for instance in reclaimed:
                instance = normalise_instances([instance])[0]
                seen.add(instance["IntegrationInstanceId"])
                record = self._ledger_call("get", instance["IntegrationInstanceId"]) or {}
                submit(instance, record.get("completing_at") is not None)
                count += 1
        state = {"reserved": count, "stop": False}

        def poll_loop() -> None:
            while True:
                with self._drain_lock:
                    if state["stop"] or state["reserved"] >= self.max_instances:
                        return
                    state["reserved"] += 1
                try:
                    found = self.api.poll_new_integration(step)
                except Exception as exc:
                    with self._drain_lock:
                        state["stop"] = True
                        poll_error.append(_error_text(exc))
                    log.error("Polling integration step %s failed: %s", step, _error_text(exc))
                    return
                with self._drain_lock:
                    if found is None:
                        state["stop"] = True
                        return
                    instance = normalise_instances([found])[0]
                    iid = instance["IntegrationInstanceId"]
                    if iid in seen:  # the server offers an instance again: everything new was received
                        state["stop"] = True
                        return
                    seen.add(iid)
                    # Claimed before anything else happens to it (the ledger write is serialised).
                    try:
                        self._ledger_call("claim", step, [found], owner=self.owner)
                    except Exception as exc:  # still processed (it was handed out), but no more polling
                        state["stop"] = True
                        poll_error.append(f"claiming instance {iid} failed: {_error_text(exc)}")
                        log.error("Claiming integration instance %s failed: %s", iid, _error_text(exc))
                    submit(instance)

        extra = [threading.Thread(target=poll_loop, name=f"workflowsoft-poller-{i}", daemon=True)
                 for i in range(self.pollers - 1)]
        for thread in extra:
            thread.start()
        poll_loop()
        for thread in extra:
            thread.join()
        return len(seen)


def process_instances(api: InstanceApi, python_callable: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """Run a :class:`BatchEngine` once: ``instances=`` (optional) goes to ``run``, the rest to the engine."""
    instances = kwargs.pop("instances", None)
    return BatchEngine(api, python_callable, **kwargs).run(instances)


def failure_message(report: Mapping[str, Any]) -> str:
    """The task's error: every failed instance with its error."""
    lines = [f"{len(report['failed'])} of {report['processed']} integration instance(s) failed "
             "(they stay claimed and are offered again by a later run):"]
    lines += [f"  - {f['IntegrationInstanceId']}: {f['error']}" for f in report["failed"]]
    if report.get("poll_error"):
        lines.append(f"Polling stopped on an error: {report['poll_error']}")
    return "\n".join(lines)


class WorkflowsoftProcessInstancesOperator(BaseOperator):
    """Process a burst of integration instances with a Python function, ``max_workers`` at a time.

    :param python_callable: ``f(fields, instance=..., **op_kwargs)`` returning the values to write (a dict)
        or ``None`` to complete without writing; see the module documentation
    :param integration_diagram_id: the integration step to poll (IntegrationDiagramID)
    :param process_diagram_name: with ``integration_step_name``, find the step by names instead
    :param integration_step_name: the integration step's name in that process diagram
    :param instances: process these (ids or instance dicts, e.g. a sensor's XCom) instead of polling (templated)
    :param max_instances: most instances received by polling in one run
    :param max_workers: callables (and instances in flight) at the same time
    :param pollers: threads polling at the same time (default: ``max_workers``; 1: the calling thread only)
    :param op_kwargs: extra keyword arguments of every call (templated)
    :param notify_on_failure: ``{"title", "assignee", "description"}``: create one Workflowsoft task per task
        instance when instances failed (assignee: user id, email or full name)
    :param reclaim_after: claims not done and older than this are offered again before polling
    :param workflowsoft_conn_id: the Airflow connection
    :param ledger_store: where claims are kept (Airflow Variables by default; tests inject a ``MemoryStore``)
    """

    template_fields: Sequence[str] = (
        "integration_diagram_id",
        "process_diagram_name",
        "integration_step_name",
        "instances",
        "op_kwargs",
        "notify_on_failure",
        "workflowsoft_conn_id",
    )
    template_fields_renderers = {"op_kwargs": "py", "instances": "json", "notify_on_failure": "json"}
    ui_color = "#e8f0fe"
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        integration_diagram_id: int | str | None = None,
        process_diagram_name: str | None = None,
        integration_step_name: str | None = None,
        instances: Any = None,
        max_instances: int = 100,
        max_workers: int = 8,
        pollers: int | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        notify_on_failure: Mapping[str, Any] | None = None,
        reclaim_after: dt.timedelta | None = dt.timedelta(hours=1),
        workflowsoft_conn_id: str = "workflowsoft_default",
        ledger_store: KeyValueStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise TypeError("python_callable must be callable")
        if integration_diagram_id is None and instances is None and not (
            process_diagram_name and integration_step_name
        ):
            raise ValueError(
                "Say which instances to process: integration_diagram_id, or process_diagram_name and "
                "integration_step_name, or instances"
            )
        pollers = _checked_sizes(max_workers, pollers, max_instances)
        if notify_on_failure is not None and not isinstance(notify_on_failure, Mapping | str):
            raise TypeError("notify_on_failure must be a dict like {'title': ..., 'assignee': ..., 'description': ...}")
        self.python_callable = python_callable
        self.integration_diagram_id = integration_diagram_id
        self.process_diagram_name = process_diagram_name
        self.integration_step_name = integration_step_name
        self.instances = instances
        self.max_instances = max_instances
        self.max_workers = max_workers
        self.pollers = pollers
        self.op_kwargs = dict(op_kwargs or {})
        self.notify_on_failure = notify_on_failure
        self.reclaim_after = reclaim_after
        self.workflowsoft_conn_id = workflowsoft_conn_id
        self.ledger_store = ledger_store

    def get_hook(self) -> Any:
        from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

        # One pooled connection per worker and per poller: no connection is ever opened twice.
        pool_size = self.max_workers + self.pollers
        return WorkflowsoftHook(self.workflowsoft_conn_id, client_options={"pool_size": pool_size})

    def _step_id(self, hook: Any) -> int | str | None:
        if self.integration_diagram_id not in (None, ""):
            step = self.integration_diagram_id
            return int(step) if isinstance(step, str) and step.strip().isdigit() else step
        if self.process_diagram_name and self.integration_step_name:
            diagram = hook.find_process_diagram(self.process_diagram_name)
            return hook.find_integration_step(diagram["Id"], self.integration_step_name)["Id"]  # type: ignore[no-any-return]
        return None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_workflowsoft.ledger import ClaimsLedger

        hook = self.get_hook()
        ti = context["ti"]
        owner = f"{ti.dag_id}.{ti.task_id}.{ti.run_id}"
        engine = BatchEngine(
            hook,
            self.python_callable,
            integration_diagram_id=self._step_id(hook),
            ledger=ClaimsLedger(self.workflowsoft_conn_id, store=self.ledger_store),
            max_instances=self.max_instances,
            max_workers=self.max_workers,
            pollers=self.pollers,
            op_kwargs=self.op_kwargs,
            reclaim_after=self.reclaim_after,
            owner=owner,
        )
        report = engine.run(self.instances)
        self.log.info(
            "Processed %d integration instance(s) in %.2f s: %d succeeded, %d failed, %d skipped (already done)",
            report["processed"], report["seconds"], len(report["succeeded"]), len(report["failed"]),
            len(report["skipped"]),
        )
        if report["failed"] or report.get("poll_error"):
            message = failure_message(report)
            if report["failed"] and self.notify_on_failure:
                try:
                    report["notification"] = self._notify(hook, context, report)
                except Exception as exc:  # the failures themselves are the task's error, not the notice
                    self.log.error("Could not create the failure task in Workflowsoft: %s", exc)
                    message += f"\nThe failure task could not be created: {_error_text(exc)}"
            ti.xcom_push(key="return_value", value=report)
            raise AirflowException(message)
        return report

    def _notify(self, hook: Any, context: Context, report: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_workflowsoft.fields import to_jsonable
        from airflow_provider_workflowsoft.ledger import CreateLedger, key_from_context

        spec = dict(self.notify_on_failure or {})
        ti = context["ti"]
        title = spec.get("title") or f"Airflow {ti.dag_id}.{ti.task_id}: {len(report['failed'])} instance(s) failed"
        listing = "\n".join(f"- {f['IntegrationInstanceId']}: {f['error']}" for f in report["failed"])
        parts = (spec.get("description"), f"Failed integration instances:\n{listing}")
        description = "\n\n".join(p for p in parts if p)
        assignee = spec.get("assignee")
        on_behalf_of = spec.get("on_behalf_of")

        def send() -> dict[str, Any]:
            user = hook.resolve_user_id(assignee) if assignee not in (None, "") else None
            return hook.create_task(  # type: ignore[no-any-return]
                str(title), assigned_user_id=user, description=description,
                on_behalf_of=on_behalf_of if on_behalf_of is not None else user,
            )

        task = CreateLedger(self.ledger_store).run_once(key_from_context(context), send, what=f"task {title!r}")
        self.log.info("Created Workflowsoft task %s for the failed instances", task.get("Id"))
        return to_jsonable(task)  # type: ignore[no-any-return]


__all__ = [
    "BatchEngine",
    "WorkflowsoftProcessInstancesOperator",
    "failure_message",
    "normalise_instances",
    "process_instances",
]
