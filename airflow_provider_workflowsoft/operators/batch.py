"""``WorkflowsoftIntegrationWorkerOperator``: process a burst of integration instances in one task.

The shape of a Camunda/Zeebe job worker: you write a function of one instance's fields that returns the
values to write; the operator drains new instances, runs the function for each with bounded
concurrency, writes the values and completes each step.

.. code-block:: python

    def enrich(fields, instance):
        return {"Event exists": True, "Venue code": lookup_venue(fields["Event name"])}

    WorkflowsoftIntegrationWorkerOperator(
        task_id="enrich_events", python_callable=enrich, integration_step_id=11, max_workers=8
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

The work itself is done by :class:`~airflow_provider_workflowsoft.worker.engine.WorkerEngine` (claims by
group commit, the sensor's drain rules, the one completion sequence); this module is the Airflow side.
One failing instance does not stop the others; when any failed, the task fails naming each of them, and
the failed ones stay claimed, so a later run (after ``reclaim_after``) offers them again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.deprecation import RenamedAttribute, warn_deprecated
from airflow_provider_workflowsoft.lineage import completion_lineage, step_paths
from airflow_provider_workflowsoft.operators._base import (
    WorkflowsoftTaskMixin,
    checked_notice,
    fails_without_retries,
    parked_listing,
)
from airflow_provider_workflowsoft.records.claims import DEFAULT_MAX_OFFERS, checked_max_offers
from airflow_provider_workflowsoft.version_compat import AirflowException, BaseOperator, Context
from airflow_provider_workflowsoft.worker import engine as batch_engine
from airflow_provider_workflowsoft.worker.engine import (
    checked_grace,
    checked_interval,
    checked_report_limit,
    checked_sizes,
    checked_unclaimed,
)


class WorkflowsoftIntegrationWorkerOperator(WorkflowsoftTaskMixin, BaseOperator):
    """Process a burst of integration instances with a Python function, ``max_workers`` at a time.

    :param python_callable: ``f(fields, instance=..., **op_kwargs)`` returning the values to write (a dict)
        or ``None`` to complete without writing; see the module documentation
    :param integration_step_id: the integration step to poll (``IntegrationDiagramID`` in the API;
        ``integration_diagram_id``, its 0.1 name, still works)
    :param process_diagram_name: with ``integration_step_name``, find the step by names instead
    :param integration_step_name: the integration step's name in that process diagram
    :param instances: process these (ids or instance dicts, e.g. a sensor's XCom) instead of polling (templated)
    :param max_instances: most instances received by polling in one run
    :param max_workers: callables (and instances in flight) at the same time
    :param pollers: threads polling at the same time (default: ``max_workers``)
    :param max_unclaimed: the most poll answers waiting for their claim write at any moment, i.e. the most a
        hard kill of this task can lose against a server that hands an instance out once (default
        ``2 x pollers``: full speed; ``1``: one poll at a time, each claimed before the next, slower)
    :param op_kwargs: extra keyword arguments of every call (templated)
    :param notify_on_failure: ``{"title", "assignee", "description"}``: create one Workflowsoft task per task
        instance when instances failed or were parked (assignee: user id, email or full name)
    :param reclaim_after: claims not done and older than this are offered again before polling
    :param progress_interval: seconds between two progress lines in the task log while instances are processed
        (received, completed, failed, rate, elapsed; default 10); ``None`` for none
    :param max_offers: an instance handed out this many times without being completed is *parked* by the next
        drain instead of offered again (``"parked"`` in the XCom; not offered again until released);
        ``None`` or ``0``: never park
    :param grace_period: seconds (or a timedelta) the instances in flight may take to finish once the task is told to
        stop (SIGTERM: a task timeout, a task marked failed, a worker's shutdown); the instances not started are
        handed back at once (offered again at once by the next run), those still in flight after it stay claimed
        (offered again after the lease). Default 3 s: Airflow's supervisor kills a task 5 s after its SIGTERM
    :param report_ids_limit: the most ids per list in the XCom report (``"succeeded"``, ``"skipped"``,
        ``"handed_back"``; ``"results"`` holds the written values of the listed ones), default 100; counts and every
        failure are always there; ``None``: no limit
    :param full_report: ``True``: every id and every instance's written values in the XCom (it grows with the batch);
        an object-storage URL (``"s3://bucket/reports/{{ run_id }}.json"``, ``"file:///..."``; templated): the full
        report is written there as JSON and its URL is the XCom key ``"full_report"``; ``False`` (default): the
        bounded report only
    :param workflowsoft_conn_id: the Airflow connection

    While it works, the task renews the lease of the claims it holds (queued or in flight) every third of
    ``reclaim_after`` (one write of its claims record per renewal), so work that takes longer than the lease is not
    offered to another run; a task that dies stops renewing, and its claims come back one lease after.

    Give the step's Asset as ``inlets`` (the Assets view then shows who reads the step; when the DAG is
    event-driven, the very Asset of its schedule). With the OpenLineage provider installed, the completions
    are reported as an output dataset of the step (fields written as its schema, instances completed as its
    row count).
    """

    template_fields: Sequence[str] = (
        "integration_step_id",
        "process_diagram_name",
        "integration_step_name",
        "instances",
        "op_kwargs",
        "notify_on_failure",
        "full_report",
        "workflowsoft_conn_id",
    )
    template_fields_renderers = {"op_kwargs": "py", "instances": "json", "notify_on_failure": "json"}
    ui_color = "#e8f0fe"
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        integration_step_id: int | str | None = None,
        process_diagram_name: str | None = None,
        integration_step_name: str | None = None,
        instances: Any = None,
        max_instances: int = 100,
        max_workers: int = 8,
        pollers: int | None = None,
        max_unclaimed: int | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        notify_on_failure: Mapping[str, Any] | None = None,
        reclaim_after: dt.timedelta | None = dt.timedelta(hours=1),
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
        integration_diagram_id: int | str | None = None,
        progress_interval: float | None = defaults.DEFAULT_PROGRESS_INTERVAL_SECONDS,
        max_offers: int | None = DEFAULT_MAX_OFFERS,
        grace_period: float | dt.timedelta = defaults.DEFAULT_GRACE_PERIOD_SECONDS,
        report_ids_limit: int | None = defaults.DEFAULT_REPORT_IDS_LIMIT,
        full_report: bool | str = False,
        **kwargs: Any,
    ) -> None:
        self._take_ledger_store(kwargs)
        super().__init__(**kwargs)
        integration_step_id = self._step_argument(integration_step_id, integration_diagram_id)
        if not callable(python_callable):
            raise TypeError("python_callable must be callable")
        if instances is None:
            StepRef(integration_step_id, process_diagram_name, integration_step_name)  # or refused, naming them

        pollers = checked_sizes(max_workers, pollers, max_instances)
        self.grace_period = checked_grace(grace_period)
        self.report_ids_limit = checked_report_limit(report_ids_limit)
        if not isinstance(full_report, bool | str):
            raise WorkflowsoftInputError(
                f"full_report must be True, False or an object-storage URL, got {full_report!r}")
        self.full_report = full_report
        self._engine: Any = None
        self.progress_interval = checked_interval(progress_interval)
        self.max_unclaimed = checked_unclaimed(max_unclaimed, pollers)
        self.python_callable = python_callable
        self.integration_step_id = integration_step_id
        self.process_diagram_name = process_diagram_name
        self.integration_step_name = integration_step_name
        self.instances = instances
        self.max_instances = max_instances
        self.max_workers = max_workers
        self.pollers = pollers
        self.op_kwargs = dict(op_kwargs or {})
        self.notify_on_failure = checked_notice(
            dict(notify_on_failure) if isinstance(notify_on_failure, Mapping) else notify_on_failure,
            "notify_on_failure")
        self.reclaim_after = reclaim_after
        self.max_offers = checked_max_offers(max_offers)
        self.workflowsoft_conn_id = workflowsoft_conn_id

    def _hook_options(self) -> dict[str, Any]:
        # One pooled connection per worker and per poller: no connection is ever opened twice.
        return {"pool_size": self.max_workers + self.pollers}

    integration_diagram_id = RenamedAttribute("integration_step_id")  # the 0.1 name

    def _step_id(self) -> int | None:
        if not StepRef.given(self.integration_step_id, self.process_diagram_name, self.integration_step_name):
            return None  # only the given instances are processed
        return self.resolve_integration_step(self.integration_step_id, self.process_diagram_name,
                                             self.integration_step_name)

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook
        claims = self.claims_for(context)
        step = self._step_id()
        engine = self._engine = batch_engine.WorkerEngine(
            hook.client,
            self.python_callable,
            integration_step_id=step,
            claims=claims,
            max_instances=self.max_instances,
            max_workers=self.max_workers,
            pollers=self.pollers,
            max_unclaimed=self.max_unclaimed,
            op_kwargs=self.op_kwargs,
            reclaim_after=self.reclaim_after,
            progress_interval=self.progress_interval,
            observer=self.metrics(),
            max_offers=self.max_offers,
            grace_period=self.grace_period,
            report_ids_limit=self.report_ids_limit,
            full_report=self.full_report is True,
        )
        report = engine.run(self.instances)
        if isinstance(self.full_report, str) and self.full_report.strip():
            report["full_report"] = write_full_report(self.full_report.strip(), {**report, **engine.outcomes})
        if step is not None:
            self.report_claims(claims, step)  # what this run leaves open (reclaimed ones: counted by the engine)
        self._lineage = {"steps": [f"integration-steps/{step}"] if step is not None else step_paths(self.inlets),
                         "fields": report["fields_written"], "completed": report["succeeded_count"]}
        report["store_round_trips"] = self.store_round_trips()
        report["store_write_ms"] = self.store_write_ms()
        if report["parked"]:
            self.log.warning("Parked %d integration instance(s), handed out %s times without being completed: %s "
                             "(not offered again until released)", len(report["parked"]), self.max_offers,
                             report["parked"])
        self.log.info(
            "Processed %d integration instance(s) in %.2f s: %d succeeded, %d failed, %d skipped (already done); "
            "%d store round trip(s), %.1f ms per record write",
            report["processed"], report["seconds"], report["succeeded_count"], report["failed_count"],
            report["skipped_count"], report["store_round_trips"], report["store_write_ms"],
        )
        if report.get("stopped"):
            context["ti"].xcom_push(key="return_value", value=report)
            raise AirflowException(stopped_message(report))
        if report["parked"] and self.notify_on_failure and not report["failed"]:
            try:
                report["notification"] = self._notify(hook, context, report)
            except Exception as exc:  # parking is reported in the log and XCom either way
                self.log.error("Could not create the task for the parked instances in Workflowsoft: %s", exc)
        if report["failed"] or report.get("poll_error"):
            message = batch_engine.failure_message(report)
            if report["failed"] and self.notify_on_failure:
                try:
                    report["notification"] = self._notify(hook, context, report)
                except Exception as exc:  # the failures themselves are the task's error, not the notice
                    self.log.error("Could not create the failure task in Workflowsoft: %s", exc)
                    message += f"\nThe failure task could not be created: {type(exc).__name__}: {exc}"
            context["ti"].xcom_push(key="return_value", value=report)
            raise AirflowException(message)
        return report

    def on_kill(self) -> None:
        """Airflow's task runner on SIGTERM (task timeout, task marked failed, worker shutdown): stop gracefully.

        No more polls; the claims of the instances not started are handed back (offered again at once by the next
        run); the instances in flight get ``grace_period`` seconds to finish; then the task fails, saying so.
        """
        engine = self._engine
        if engine is not None:
            engine.stop("SIGTERM")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the step this run fed, the fields it wrote, how many instances it completed."""
        done = getattr(self, "_lineage", None)
        if not done:
            return None
        return completion_lineage(self.hook.client.config.base_url, done["steps"], done["fields"], done["completed"])

    def _notify(self, hook: Any, context: Context, report: dict[str, Any]) -> dict[str, Any]:
        ti = context["ti"]
        failed, parked = report["failed"], report.get("parked") or []
        what = [f"{len(failed)} instance(s) failed"] if failed else []
        what += [f"{len(parked)} instance(s) parked"] if parked else []
        parts = []
        if failed:
            parts.append("Failed integration instances:\n" + "\n".join(
                f"- {f['IntegrationInstanceId']}: {f['error']}" for f in failed))
        if parked:
            parts.append(parked_listing(parked, report.get("max_offers")))
        task = self.create_notice(context, self.notify_on_failure,
                                  title=f"Airflow {ti.dag_id}.{ti.task_id}: {', '.join(what)}",
                                  listing="\n\n".join(parts))
        self.log.info("Created Workflowsoft task %s for the failed or parked instances", task.get("Id"))
        return task


def stopped_message(report: Mapping[str, Any]) -> str:
    """Return the error of a run that was stopped: what it finished, handed back and left in flight."""
    return (f"The batch worker was stopped ({report['stopped']}): {report['succeeded_count']} instance(s) completed, "
            f"{report['failed_count']} failed, {report['handed_back_count']} not started handed back (offered again at "
            f"once by the next run), {len(report['in_flight_at_stop'])} still in flight after the "
            "grace period (offered again after the lease)")


def write_full_report(url: str, report: Mapping[str, Any]) -> str:
    """Write the full report (every id, every written value) as JSON to an Airflow object-storage URL; return it."""
    # Object storage (fsspec) is loaded only when a full report is written there: DAG files never pay for it.
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    path = ObjectStoragePath(url)
    path.parent.mkdir(parents=True, exist_ok=True)  # a folder on local storage; object stores have none to make
    full = {k: v for k, v in report.items() if k not in ("in_flight",)}
    with path.open("w") as out:
        json.dump(full, out, default=str)
    return str(path)


class WorkflowsoftProcessInstancesOperator(WorkflowsoftIntegrationWorkerOperator):
    """Deprecated: the 0.1 name of :class:`WorkflowsoftIntegrationWorkerOperator`.

    It processes integration instances, not process instances.
    """

    def __init__(self, **kwargs: Any) -> None:
        warn_deprecated("WorkflowsoftProcessInstancesOperator is deprecated: use WorkflowsoftIntegrationWorkerOperator")
        super().__init__(**kwargs)


def __getattr__(name: str) -> Any:
    # The engine's names, importable from here as in 0.1, with a deprecation warning.
    if name in ("BatchEngine", "failure_message", "normalise_instances", "process_instances"):
        warn_deprecated(f"{__name__}.{name} is deprecated: import it from {batch_engine.__name__}")
        return getattr(batch_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WorkflowsoftIntegrationWorkerOperator", "WorkflowsoftProcessInstancesOperator"]
