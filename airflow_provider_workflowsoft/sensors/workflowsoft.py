"""``WorkflowsoftIntegrationSensor``: waits for new integration instances of an integration step.

Reliability rules (the claims, :class:`~airflow_provider_workflowsoft.records.claims.ClaimsLedger`):

* every instance received from Workflowsoft is claimed right after it is polled (one write of this task
  instance's claims record), before anything else (fields) is done with it: a poll hands an instance out
  once, so a run that dies afterwards must not lose it;
* before polling, claims of this step that are older than ``reclaim_after`` and not done are offered
  again (they count in ``max_instances``), and so are this task instance's own claims from an earlier try;
* instances that another run claimed within its lease are not taken again when a server repeats them;
* deferred, the trigger claims each instance in this task instance's record as soon as it is polled
  (Airflow 3.3+), so a triggerer killed between a poll and its event loses nothing;
* a live holder renews its claims every third of ``reclaim_after``
  (:class:`~airflow_provider_workflowsoft.records.leases.LeaseKeeper`): the check (poke, or the deferred task's first
  check) while it drains and reads fields, the trigger from its first claim to its
  event, the resumed task when it takes them over from its trigger. Once handed over (the XCom) they are the DAG run's:
  a downstream batch worker (``instances=sensor.output``) takes them over and renews them while it works; between
  tasks nothing of this package runs, so ``reclaim_after`` must cover the time from the sensor's end to the
  downstream completion (docs/reliability.md);
* with ``process_instance_id`` the sensor is a *waiter*: it waits for that process instance to reach the step,
  and every instance of another process it receives is passed on, never dropped nor held (the claims' routing
  rule, :meth:`ClaimsLedger.keeps`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import conf

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.api.errors import WorkflowsoftError, WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import to_jsonable
from airflow_provider_workflowsoft.api.protocol import (
    as_timedelta,
    blank,
    coerce_process_instance_id,
    poll_seconds,
    to_bool,
)
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.deprecation import RenamedAttribute
from airflow_provider_workflowsoft.operators._base import (
    WorkflowsoftTaskMixin,
    checked_notice,
    fails_without_retries,
    parked_listing,
)
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import CLAIMED, DEFAULT_MAX_OFFERS, checked_max_offers
from airflow_provider_workflowsoft.records.leases import LeaseKeeper
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger
from airflow_provider_workflowsoft.version_compat import (
    AirflowException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
)

log = logging.getLogger(__name__)


class WorkflowsoftIntegrationSensor(WorkflowsoftTaskMixin, BaseSensorOperator):
    """Waits for new integration instances of an integration step and returns them.

    The XCom ``return_value`` is a list of ``{"IntegrationInstanceId", "ProcessInstanceId"}`` dicts
    (plus ``"fields": {label: value}`` with ``fetch_fields=True``; datetimes as ISO strings ending in
    ``Z``, decimals as exact strings), ready for ``.expand(integration_instance_id=sensor.output)``.

    .. code-block:: python

        new_events = WorkflowsoftIntegrationSensor(
            task_id="new_events",
            process_diagram_name="Event registration",
            integration_step_name="Enrich event",
            max_instances=10,
            fetch_fields=True,
            deferrable=True,
        )

    :param integration_step_id: the integration step (``IntegrationDiagramID`` in the API) to wait on
        (``integration_diagram_id``, its 0.1 name, still works)
    :param process_diagram_name: with ``integration_step_name``, the step by name (resolved at run time)
    :param integration_step_name: the integration step's title in that process diagram
    :param max_instances: the most instances one run takes; a drain also stops at an empty answer or
        when the server repeats an instance it already gave
    :param fetch_fields: read each instance's fields into ``"fields"``
    :param process_instance_id: wait for this one process instance to reach the step (the start operator's
        answer ``{"Id", "Title"}`` as it is, e.g. ``start.output`` or ``"{{ ti.xcom_pull('start') }}"``, or its id):
        only its instances are returned; instances of other processes received meanwhile are passed on at once to
        the waiter that wants them or to the step's other pollers (``None``: any instance)
    :param reclaim_after: lease of a claim: claimed-but-not-done instances older than this are offered
        again (``None``: never)
    :param max_offers: an instance handed out this many times without being completed is *parked* by the next
        check instead of offered again: not offered again until released, listed as ``"parked"`` by
        ``WorkflowsoftListClaimsOperator``, its id in the XCom key ``"parked"`` and the log (``None`` or ``0``:
        never park)
    :param notify_on_park: ``{"title", "assignee", "description", "on_behalf_of"}``: create one Workflowsoft task
        for a person when this task instance parks instances
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``)
    :param poll_interval: deferrable mode: time between the trigger's polls while nothing is new (a timedelta
        or seconds). Default 30 s; a sensor given ``poke_interval`` (itself or in ``default_args``) and no
        ``poll_interval`` polls every ``poke_interval``, as before 0.4. ``poke_interval`` keeps its Airflow
        meaning for the poke and reschedule modes
    :param max_consecutive_failures: deferrable mode: failed polls in a row before the task fails
    :param workflowsoft_conn_id: the Workflowsoft connection id

    Give the step's Asset as ``inlets`` (the Assets view then shows who reads the step), see
    :func:`~airflow_provider_workflowsoft.assets.workflowsoft.integration_step_asset`.
    """

    template_fields: Sequence[str] = (
        "integration_step_id",
        "process_diagram_name",
        "integration_step_name",
        "max_instances",
        "fetch_fields",
        "process_instance_id",
        "reclaim_after",
        "max_offers",
        "notify_on_park",
        "workflowsoft_conn_id",
    )
    ui_color = "#e8f0ff"

    def __init__(
        self,
        *,
        integration_step_id: int | str | None = None,
        process_diagram_name: str | None = None,
        integration_step_name: str | None = None,
        max_instances: int | str = 1,
        fetch_fields: bool = False,
        reclaim_after: dt.timedelta | None = dt.timedelta(hours=1),
        deferrable: bool | None = None,
        max_consecutive_failures: int = 5,
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
        integration_diagram_id: int | str | None = None,
        poll_interval: dt.timedelta | float | None = None,
        max_offers: int | None = DEFAULT_MAX_OFFERS,
        notify_on_park: dict[str, Any] | None = None,
        process_instance_id: Any = None,
        **kwargs: Any,
    ) -> None:
        self._take_ledger_store(kwargs)
        # Before 0.4 the deferred trigger polled every poke_interval: a DAG that set it keeps that pace.
        poke_given = "poke_interval" in kwargs or "poke_interval" in (kwargs.get("default_args") or {})
        super().__init__(**kwargs)
        integration_step_id = self._step_argument(integration_step_id, integration_diagram_id)
        checked_max_offers(max_offers)
        StepRef(integration_step_id, process_diagram_name, integration_step_name)  # refuses neither given
        self.integration_step_id = integration_step_id
        self.process_diagram_name = process_diagram_name
        self.integration_step_name = integration_step_name
        self.max_instances = max_instances
        self.fetch_fields = fetch_fields
        self.reclaim_after = reclaim_after
        self.deferrable = (conf.getboolean("operators", "default_deferrable", fallback=False) if deferrable is None
                           else bool(deferrable))
        self.max_consecutive_failures = max_consecutive_failures
        self.workflowsoft_conn_id = workflowsoft_conn_id
        if poll_interval is None and poke_given:
            poll_interval = float(self.poke_interval)
        self.poll_interval = poll_seconds(
            defaults.DEFAULT_POLL_INTERVAL_SECONDS if poll_interval is None else poll_interval)
        self.max_offers = max_offers
        self.notify_on_park = checked_notice(notify_on_park, "notify_on_park")
        self.process_instance_id = process_instance_id
        self._step_id: int | None = None
        self._skip_ids: list[Any] = []

    # -- helpers ------------------------------------------------------------------------------------

    def _limit(self) -> int:
        try:
            limit = int(self.max_instances)
        except (TypeError, ValueError):
            raise WorkflowsoftInputError(f"max_instances must be a whole number, got {self.max_instances!r}") from None
        if limit < 1:
            raise WorkflowsoftInputError(f"max_instances must be 1 or more, got {limit}")
        return limit

    def step_id(self) -> int:
        """Return the integration step id, resolved by name once per task run when not given."""
        if self._step_id is None:
            self._step_id = self.resolve_integration_step(
                self.integration_step_id, self.process_diagram_name, self.integration_step_name)
            if self.integration_step_id in (None, ""):
                self.log.info("Integration step %r of %r is %s", self.integration_step_name,
                              self.process_diagram_name, self._step_id)
        return self._step_id

    integration_diagram_id = RenamedAttribute("integration_step_id")  # the 0.1 name

    def _process_id(self) -> int | None:
        """Return the rendered ``process_instance_id`` (``None``: not a waiter), refused clearly when it is no id."""
        if self.process_instance_id is None or blank(self.process_instance_id):
            return None
        return coerce_process_instance_id(self.process_instance_id)

    @property
    def _lease(self) -> dt.timedelta | None:
        """``reclaim_after`` as a timedelta: templated values arrive as seconds (``"0"``, ``"3600"``)."""
        return as_timedelta(self.reclaim_after, "reclaim_after")

    @property
    def _max_offers(self) -> int | None:
        return checked_max_offers(self.max_offers)

    def _report_parked(self, context: Context, parked: list[Any]) -> None:
        """Instances this check parked: the XCom key ``"parked"``, the log, and the notice (``notify_on_park``)."""
        if not parked:
            return
        self.log.warning("Parked integration instance(s) %s of step %s: handed out %s times without being completed, "
                         "not offered again until released", list(parked), self.step_id(), self._max_offers)
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key="parked", value=list(parked))
        if self.notify_on_park:
            try:
                task = self.create_notice(context, self.notify_on_park,
                                          title=f"Workflowsoft integration step {self.step_id()}: "
                                                f"{len(parked)} instance(s) parked",
                                          listing=parked_listing(parked, self._max_offers))
                self.log.info("Created Workflowsoft task %s for the parked instances", task.get("Id"))
            except Exception as exc:  # parking is reported in the log and XCom either way
                self.log.error("Could not create the task for the parked instances in Workflowsoft: %s", exc)

    def _with_fields(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for instance in instances:
            item = {"IntegrationInstanceId": instance["IntegrationInstanceId"],
                    "ProcessInstanceId": instance.get("ProcessInstanceId")}
            if instance.get("reclaimed"):
                item["reclaimed"] = True
            if to_bool(self.fetch_fields):
                fields = instance.get("fields")
                if fields is None:
                    fields = to_jsonable(self.hook.client.get_field_values(instance["IntegrationInstanceId"]))
                item["fields"] = fields
            out.append(item)
        return out

    def drain(self, context: Context) -> list[dict[str, Any]]:
        """One check: re-offered claims first, then new instances, each claimed as soon as it is polled."""
        step = self.step_id()
        limit = self._limit()
        claims = self.claims_for(context)
        offered, self._skip_ids = claims.prepare_drain(step, self._lease, limit, max_offers=self._max_offers,
                                                       process_instance_id=self._process_id())
        self._report_parked(context, claims.parked)
        self.report_prepared(claims, step)
        drain = Drain(limit, taken=offered, skip=self._skip_ids, keep=claims.keeps)
        claims.start_polling(step, 1)  # one poll at a time, each answer claimed before the next
        # This check is the live holder of what it takes until it hands it over (its XCom): a slow drain (a throttled
        # tenant, many instances) or a slow read of fields keeps its claims within their lease.
        with LeaseKeeper(claims, self._lease):
            try:
                while not drain.finished:
                    instance = self.hook.client.poll_new_integration(step)
                    if drain.offer(instance):
                        assert instance is not None
                        claims.claim(step, [instance])  # durable before anything else happens to it
                    elif drain.passed:  # another process's: put back for its waiter or the others, before the next poll
                        claims.pass_on(step, drain.take_passed())
            except WorkflowsoftError as exc:
                if not drain.instances or isinstance(exc, WorkflowsoftInputError):
                    raise
                self.log.warning("Polling failed after %d instance(s) were received (%s); returning those",
                                 len(drain.instances), exc)
                drain.finished, drain.reason = True, "a poll failed"
            self.report_claims(claims, step, reclaimed=len(offered))
            if not drain.instances:
                claims.stop_polling()
            if drain.instances:
                claims.close()  # this task instance writes no more claims: readers may tidy its record
                self.log.info("Took %d integration instance(s) of step %s (drain stopped: %s): %s",
                              len(drain.instances), step, drain.reason or "limit",
                              [i["IntegrationInstanceId"] for i in drain.instances])
            return self._with_fields(drain.instances)

    # -- sensor -------------------------------------------------------------------------------------

    @fails_without_retries
    def poke(self, context: Context) -> PokeReturnValue:
        instances = self.drain(context)
        return PokeReturnValue(is_done=bool(instances), xcom_value=instances)

    @fails_without_retries
    def execute(self, context: Context) -> Any:
        self._process_id()  # a bad process_instance_id fails before anything is polled
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                self._stop_waiting(context)
                raise
        instances = self.drain(context)
        if instances:
            return instances
        self._defer(context)
        return None  # pragma: no cover - defer raises

    def _defer(self, context: Context, wait_until: float | None = None) -> None:
        step = self.step_id()
        timeout = self.timeout
        if self._process_id() is not None and timeout is not None:
            # A waiter's trigger ends the wait itself at the sensor's timeout, so that the wait is dropped.
            wait_until = wait_until or time.time() + float(timeout)
            timeout = max(0.0, wait_until - time.time()) + self.poll_interval + 60
        self.defer(
            trigger=WorkflowsoftIntegrationTrigger(
                integration_step_id=step,
                workflowsoft_conn_id=self.workflowsoft_conn_id,
                max_instances=self._limit(),
                fetch_fields=to_bool(self.fetch_fields),
                poll_interval=self.poll_interval,
                max_consecutive_failures=self.max_consecutive_failures,
                skip_ids=list(self._skip_ids),
                # The trigger claims what it polls in this task instance's record before its event:
                # a triggerer killed in between loses nothing (the trigger, run again, offers them first).
                claims_owner=naming.owner_from_context(context) or None,
                reclaim_after=lease.total_seconds() if (lease := self._lease) is not None else None,
                max_offers=self._max_offers,
                process_instance_id=self._process_id(),
                wait_until=wait_until,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=float(timeout)) if timeout is not None else None,
        )

    @fails_without_retries
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Resume after the trigger: claim the event's instances, then return them (or fail clearly)."""
        if not isinstance(event, dict):
            raise AirflowException(f"Workflowsoft trigger sent an event this sensor cannot read: {event!r}")
        step = self.step_id()
        instances = [i for i in event.get("instances") or [] if isinstance(i, dict)]
        self._report_parked(context, [i for i in event.get("parked") or [] if isinstance(i, int | str)])
        passed = [i for i in event.get("passed") or [] if isinstance(i, dict)]
        if passed:  # a trigger without the claims records (before Airflow 3.3) hands over what it did not keep
            self.claims_for(context).pass_on(step, passed)
        if event.get("status") == "timeout":
            self._stop_waiting(context)
            raise AirflowSensorTimeout(f"Process instance {self._process_id()} did not reach Workflowsoft "
                                       f"integration step {step} within the sensor's timeout")
        claims = self.claims_for(context)
        if instances:
            # On Airflow 3.3 the trigger claimed them in this record before its event: one hand-over, one offer. The
            # resumed task is their live holder now: their lease runs again from here (renewed with the close's write).
            ids = [i["IntegrationInstanceId"] for i in instances]
            claims.renew([i for i in ids if claims.own_state(i) == CLAIMED], write=False)
            claims.claim(step, [i for i in instances if claims.own_state(i["IntegrationInstanceId"]) != CLAIMED])
            claims.close()
        if event.get("status") != "success":
            kept = f" ({len(instances)} instance(s) received were claimed and will be re-offered)" if instances else ""
            raise AirflowException(f"Waiting for Workflowsoft integration step {step} failed: "
                                   f"{event.get('message', 'no message')}{kept}")
        if not instances:
            self._defer(context, event.get("wait_until"))
        if event.get("warning"):
            self.log.warning("The trigger reported: %s", event["warning"])
        with LeaseKeeper(claims if instances else None, self._lease):  # fields read for an event without them
            return self._with_fields(instances)

    def _stop_waiting(self, context: Context) -> None:
        """Drop the wait of a waiter that timed out: its process's instance, when it comes, goes to the others."""
        if self._process_id() is not None:
            self.claims_for(context).stop_waiting()
            self.log.info("Stopped waiting for process instance %s: its instance at step %s now goes to the "
                          "step's other pollers", self._process_id(), self.step_id())


__all__ = ["WorkflowsoftIntegrationSensor"]
