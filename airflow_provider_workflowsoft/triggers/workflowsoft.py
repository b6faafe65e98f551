"""``WorkflowsoftIntegrationTrigger``: waits in the triggerer for new integration instances.

The trigger polls ``new-integrations`` with the async client until it gets at least one instance,
drains up to ``max_instances`` in one go (the same stop rules as the sensor: see :class:`Drain`),
optionally reads each instance's fields, and fires one ``TriggerEvent``. Transient faults (network,
429, 5xx after the client's own retries) are ridden out with backoff; an error event is fired only
after ``max_consecutive_failures`` failed rounds in a row, or at once for errors that cannot heal
(refused credentials, unknown integration step).

Instances already received are never dropped: when polling or reading fields fails after some were
received, the event carries them (without fields; the sensor reads those itself). With ``claims_owner``
(the deferred sensor's task instance; Airflow 3.3+, whose triggerer serves Variables to triggers) every
instance is claimed in that task instance's claims record as soon as it is polled, before the event:
a triggerer killed in between loses nothing, and the trigger, run again, offers those claims first. While it holds
them (the rest of its drain, reading fields, rounds retried after a failure) it renews their lease every third of
``reclaim_after`` (:class:`~airflow_provider_workflowsoft.records.leases.LeaseKeeper`), so a slow drain is not offered
to another run; a triggerer that dies stops renewing, and they come back one lease after the last beat.

``WorkflowsoftIntegrationEventTrigger`` is the asset watcher's trigger (event-driven scheduling, see
:mod:`airflow_provider_workflowsoft.assets.workflowsoft`): it polls forever, claims what it receives in its
Asset's state store, and fires one event (one asset event, one DAG run's worth) per drain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow.triggers.base import BaseEventTrigger as _EventTriggerBase
else:
    try:  # Airflow 3: asset watchers
        from airflow.triggers.base import BaseEventTrigger as _EventTriggerBase
    except ImportError:  # Airflow 2: no asset watchers; integration_step_asset says which Airflow is needed
        _EventTriggerBase = BaseTrigger

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.api.errors import WorkflowsoftError, WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import to_jsonable
from airflow_provider_workflowsoft.api.protocol import as_timedelta, coerce_id, poll_seconds, renamed_argument
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.assets.workflowsoft import integration_step_uri
from airflow_provider_workflowsoft.deprecation import RenamedAttribute
from airflow_provider_workflowsoft.hooks.workflowsoft import (
    WorkflowsoftHook,
    aconnection_extras,
    aget_connection,
    config_from_connection,
)
from airflow_provider_workflowsoft.metrics import recorder
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import (
    DEFAULT_MAX_OFFERS,
    ClaimsLedger,
    checked_max_offers,
    process_key,
)
from airflow_provider_workflowsoft.records.leases import LeaseKeeper
from airflow_provider_workflowsoft.records.stores import AssetStateStore, VariableStore, WatcherVariableStore
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS, asset_classes

log = logging.getLogger(__name__)

CLASSPATH = "airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationTrigger"
EVENT_CLASSPATH = "airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationEventTrigger"
#: While an event's instances are not taken by a run yet, the watcher looks again this often (seconds, at most).
ACK_CHECK_SECONDS = 1.0


class RecordsUnavailableError(OSError):
    """The claims records could not be read or written (a transient fault: the round is retried)."""


async def off_loop(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous call that may reach Airflow (a Variable, a metric's read of the records) off the event loop.

    ``asyncio.to_thread`` on Airflow 3.3. Before, asgiref's ``sync_to_async`` (the wrapper Airflow 3.1 names for sync
    calls in triggers): 3.1.8's triggerer answers a Variable call made from a plain worker thread with "Response read
    out of order!" and its trigger runner dies.
    """
    if AIRFLOW_V_3_3_PLUS:
        return await asyncio.to_thread(call, *args, **kwargs)
    from asgiref.sync import sync_to_async

    return await sync_to_async(call)(*args, **kwargs)


async def keep_alive(lease: LeaseKeeper) -> None:
    """Beat ``lease`` every interval from the event loop until cancelled, each beat off the loop (:func:`off_loop`).

    :class:`LeaseKeeper`'s own thread is for tasks; in a trigger a records call must go through :func:`off_loop`.
    """
    if lease.interval is None:
        return
    while True:
        await asyncio.sleep(lease.interval)
        await off_loop(lease.beat)


async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a records call (synchronous round trips to Airflow) off the event loop (:func:`off_loop`).

    Its failure becomes :class:`RecordsUnavailableError`.
    """
    try:
        return await off_loop(call, *args, **kwargs)
    except Exception as exc:
        raise RecordsUnavailableError(f"the claims records could not be read or written: {exc}") from exc


def watcher_settings(max_instances: Any, poll_interval: Any, reclaim_after: Any, max_offers: Any) -> dict[str, Any]:
    """Check an asset watcher's settings (the one check of ``integration_step_asset`` and the queue provider).

    Returns them JSON-safe: ``max_instances`` a whole number of 1 or more, ``poll_interval`` and ``reclaim_after``
    in seconds (timedeltas or numbers), the lease longer than the poll interval; ``max_offers`` as
    :func:`~airflow_provider_workflowsoft.records.claims.checked_max_offers` reads it.
    """
    limit = coerce_id(max_instances, "max_instances")
    if not isinstance(limit, int) or limit < 1:
        raise WorkflowsoftInputError(f"max_instances must be a whole number of 1 or more, got {max_instances!r}")
    interval = poll_seconds(poll_interval)
    lease = as_timedelta(reclaim_after, "reclaim_after")
    if lease is None:
        raise WorkflowsoftInputError(f"reclaim_after must be a timedelta or a number of seconds, got {reclaim_after!r}")
    if lease.total_seconds() <= interval:
        raise WorkflowsoftInputError(
            f"reclaim_after must be longer than poll_interval ({interval:g} s), got {reclaim_after!r}: the lease "
            "is how long a DAG run has to complete what the watcher handed it"
        )
    return {"max_instances": limit, "poll_interval": interval, "reclaim_after": lease.total_seconds(),
            "max_offers": checked_max_offers(max_offers)}


def failure_wait(poll_interval: float, failures: int, longest: float) -> float:
    """Return the wait after ``failures`` failed rounds in a row.

    The poll interval (at least 1 s), doubled per failure, at most ``longest``.
    """
    return min(longest, max(poll_interval, 1.0) * (2 ** min(failures - 1, 16)))


async def drain_and_claim(
    client: Any,
    step: Any,
    drain: Drain,
    claims: ClaimsLedger | None,
) -> None:
    """Poll ``step`` until ``drain`` finishes, claiming each instance it takes before the next poll.

    The claims record is written in a worker thread (the store's calls are synchronous round trips to
    Airflow; the triggerer serves them from any thread). An exception leaves ``drain.instances`` holding
    every instance received so far; each is claimed, except the last one when its claim write failed
    (:class:`RecordsUnavailableError`): the caller still hands it over. Answers the drain does not keep (the
    claims' routing rule) are passed on before the next poll; without claims they stay in ``drain.passed``.
    """
    while not drain.finished:
        instance = await client.poll_new_integration(step)
        if drain.offer(instance):
            if claims is not None:
                assert instance is not None
                await in_thread(claims.claim, step, [instance])
        elif drain.passed and claims is not None:
            await in_thread(claims.pass_on, step, drain.take_passed())


class DrainMetrics:
    """Send a trigger's claims metrics, the same as the sensor's and the batch worker's.

    Through :class:`~airflow_provider_workflowsoft.metrics.StatsRecorder`, sent only when Airflow sends metrics
    from the triggerer. The sends are UDP datagrams (or OpenTelemetry's buffered instruments); the read of the claims
    records behind the gauges runs in a worker thread, off the event loop. Metrics never fail a round.
    """

    def __init__(self) -> None:
        try:
            self.recorder = recorder()
        except Exception as exc:
            log.warning("Could not set up the claims metrics: %s", exc)
            self.recorder = None

    def prepared(self, claims: ClaimsLedger, step: Any, offered: int) -> None:
        """Count what ``claims.prepare_drain`` found: instances offered again, parked, drains killed while polling."""
        if self.recorder is None:
            return
        try:
            self.recorder.reclaimed(step, offered)
            self.recorder.drain_prepared(step, claims.parked, claims.interrupted)
        except Exception as exc:
            log.warning("Could not send the claims metrics: %s", exc)

    async def drained(self, claims: ClaimsLedger, step: Any) -> None:
        """Gauge the open claims of ``step`` and the oldest one's age after a drain (one read of the records)."""
        if self.recorder is not None:
            await off_loop(self.recorder.claims_after_drain, claims, step)


async def async_client(
    conn_id: str, client_options: dict[str, Any], client_factory: Callable[[Any], Any] | None
) -> Any:
    """Return the async client of a connection, read with the triggerer's async-safe calls."""
    hook = WorkflowsoftHook(conn_id, client_options=client_options)
    if client_factory is not None:  # tests inject a transport
        conn = await aget_connection(conn_id)
        return client_factory(
            config_from_connection(conn, extras=await aconnection_extras(conn), **client_options)
        )
    return await hook.get_async_client()


class WorkflowsoftIntegrationTrigger(BaseTrigger):
    """Fires when new integration instances of an integration step are available.

    Event payloads: ``{"status": "success", "instances": [{"IntegrationInstanceId", "ProcessInstanceId",
    "fields"?}, ...], "parked"?: [ids parked by its drains]}`` or ``{"status": "error", "message": ...,
    "instances": [...]}``.

    .. code-block:: python

        trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=10, poll_interval=30)

    :param workflowsoft_conn_id: the Workflowsoft connection id (default ``workflowsoft_default``; ``conn_id``, its
        0.1 name, still works)
    :param integration_step_id: the integration step (``IntegrationDiagramID`` in the API) to poll
        (``integration_diagram_id``, its 0.1 name, still works)
    :param max_instances: the most instances one event carries
    :param fetch_fields: also read each instance's fields (``{label: value}``, JSON-safe)
    :param poll_interval: seconds between polls when nothing is new
    :param max_consecutive_failures: failed rounds in a row before an error event
    :param skip_ids: instance ids another run is working on: polled again, they count as "nothing new"
    :param client_options: :class:`~airflow_provider_workflowsoft.api.client.ClientConfig` fields that win over
        the connection (JSON-safe values)
    :param failure_backoff_max: the longest wait, in seconds, between failed rounds
    :param claims_owner: the deferred task instance (``dag/run/task/map index``) whose claims record the
        trigger writes: each instance is claimed before the event, and that record's open claims of the step
        are offered first (Airflow 3.3+; ``None``: the sensor claims in ``execute_complete``)
    :param reclaim_after: with ``claims_owner``, the claims' lease in seconds (other runs' claims older
        than this are offered again)
    :param max_offers: with ``claims_owner``, claims handed out this many times without being completed are
        parked instead of offered again (``None`` or ``0``: never park)
    :param process_instance_id: wait for this process instance only (the sensor's ``process_instance_id``):
        instances of other processes are passed on (with ``claims_owner``: put back in the claims records before the
        next poll; without: handed to the sensor in the event's ``"passed"``)
    :param wait_until: with ``process_instance_id``, the epoch second at which the wait ends with a ``"timeout"``
        event (the sensor's timeout: the sensor drops its wait, then fails as a timed-out sensor)
    """

    def __init__(
        self,
        integration_step_id: int | None = None,
        workflowsoft_conn_id: str | None = None,
        max_instances: int = 1,
        fetch_fields: bool = False,
        poll_interval: float = 60.0,
        max_consecutive_failures: int = 5,
        skip_ids: list[Any] | None = None,
        client_options: dict[str, Any] | None = None,
        failure_backoff_max: float = 300.0,
        conn_id: str | None = None,
        integration_diagram_id: int | None = None,
        claims_owner: str | None = None,
        reclaim_after: float | None = None,
        max_offers: int | None = DEFAULT_MAX_OFFERS,
        process_instance_id: int | None = None,
        wait_until: float | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        conn = renamed_argument(workflowsoft_conn_id, conn_id, new="workflowsoft_conn_id", old="conn_id", owner=owner)
        # None, not a default value in the signature: renamed_argument refuses an old and a new name that differ
        self.workflowsoft_conn_id = defaults.DEFAULT_CONN_ID if conn is None else conn
        step = renamed_argument(integration_step_id, integration_diagram_id, new="integration_step_id",
                                old="integration_diagram_id", owner=owner)
        if step is None:
            raise TypeError("WorkflowsoftIntegrationTrigger needs integration_step_id")
        self.integration_step_id = step
        self.max_instances = int(max_instances)
        self.fetch_fields = bool(fetch_fields)
        self.poll_interval = float(poll_interval)
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self.skip_ids = list(skip_ids or [])
        self.client_options = dict(client_options or {})
        self.failure_backoff_max = float(failure_backoff_max)
        self.claims_owner = claims_owner
        self.reclaim_after = None if reclaim_after is None else float(reclaim_after)
        self.max_offers = checked_max_offers(max_offers)
        self.process_instance_id = process_instance_id
        self.wait_until = None if wait_until is None else float(wait_until)
        #: built by ``run()``; tests replace it to inject a transport
        self.client_factory: Callable[[Any], Any] | None = None
        #: where the claims records live (``None``: Airflow Variables); tests inject a store
        self.claims_store: Any = None
        self._held: list[Any] = []
        self._parked: list[Any] = []  # parked by this trigger's drains: the sensor reports them
        self._drain_metrics: DrainMetrics | None = None
        self.sleep: Callable[[float], Any] = asyncio.sleep

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "integration_step_id": self.integration_step_id,
                "workflowsoft_conn_id": self.workflowsoft_conn_id,
                "max_instances": self.max_instances,
                "fetch_fields": self.fetch_fields,
                "poll_interval": self.poll_interval,
                "max_consecutive_failures": self.max_consecutive_failures,
                "skip_ids": list(self.skip_ids),
                "client_options": dict(self.client_options),
                "failure_backoff_max": self.failure_backoff_max,
                "claims_owner": self.claims_owner,
                "reclaim_after": self.reclaim_after,
                "max_offers": self.max_offers,
                "process_instance_id": self.process_instance_id,
                "wait_until": self.wait_until,
            },
        )

    integration_diagram_id = RenamedAttribute("integration_step_id")  # the 0.1 names
    conn_id = RenamedAttribute("workflowsoft_conn_id")

    async def _client(self) -> Any:
        return await async_client(self.workflowsoft_conn_id, self.client_options, self.client_factory)

    def _metrics(self) -> DrainMetrics:
        if self._drain_metrics is None:
            self._drain_metrics = DrainMetrics()
        return self._drain_metrics

    def _failure_wait(self, failures: int) -> float:
        return failure_wait(self.poll_interval, failures, self.failure_backoff_max)

    def _claims(self) -> ClaimsLedger | None:
        """Return the deferred task instance's claims ledger, when the trigger keeps claims."""
        if self.claims_owner is None:
            return None
        if self.claims_store is None and not AIRFLOW_V_3_3_PLUS:  # older triggerers do not serve Variables to triggers
            return None
        return ClaimsLedger(self.workflowsoft_conn_id, self.claims_store, owner=self.claims_owner)

    async def _start_drain(self, claims: ClaimsLedger | None, received: list[dict[str, Any]]) -> Drain:
        """Return the drain of one round.

        What is already received, then (with claims) this task instance's open claims and expired claims of others,
        leaving alone what other runs hold.
        """
        taken = list(received)
        if claims is not None and not received:
            lease = None if self.reclaim_after is None else dt.timedelta(seconds=self.reclaim_after)
            offered, held = await in_thread(claims.prepare_drain, self.integration_step_id, lease, self.max_instances,
                                            max_offers=self.max_offers, process_instance_id=self.process_instance_id)
            self._parked += [i for i in claims.parked if i not in self._parked]
            self._metrics().prepared(claims, self.integration_step_id, len(offered))
            taken = offered
            self._held = list(held)  # kept for the rounds that follow a failed one
        skip = list(self.skip_ids) + [i for i in self._held if i not in self.skip_ids]
        return Drain(self.max_instances, taken=taken, skip=skip, keep=self._keep(claims))

    def _keep(self, claims: ClaimsLedger | None) -> Callable[[Any], bool] | None:
        """Return the routing rule: the claims' (:meth:`ClaimsLedger.keeps`); without claims, a waiter's process."""
        if claims is not None:
            return claims.keeps
        if self.process_instance_id is None:
            return None
        wanted = process_key(self.process_instance_id)
        return lambda instance: process_key(instance.get("ProcessInstanceId")) == wanted

    async def run(self) -> AsyncIterator[TriggerEvent]:  # type: ignore[override]
        received: list[dict[str, Any]] = []  # kept across failed rounds: never drop a handed-out instance
        failures = 0
        client = None
        claims = self._claims()
        # The trigger is the live holder of what it claimed until its event: a slow drain, a slow read of fields or
        # rounds retried after a failure keep those claims within their lease (a beat with nothing open writes
        # nothing). Each beat runs off the event loop through off_loop (a plain thread's Variable call kills 3.1's
        # trigger runner); the task resumed renews them again.
        beats = asyncio.ensure_future(keep_alive(LeaseKeeper(claims, self.reclaim_after)))
        try:
            while True:
                drain: Drain | None = None
                try:
                    if client is None:
                        client = await self._client()
                    drain = await self._start_drain(claims, received)
                    received = drain.instances
                    await drain_and_claim(client, self.integration_step_id, drain, claims)
                    received = drain.instances
                    if drain.passed:  # no claims records here: the sensor passes them on
                        yield TriggerEvent({"status": "success", "instances": received,
                                            "passed": drain.take_passed(), "wait_until": self.wait_until})
                        return
                    if claims is not None:
                        await self._metrics().drained(claims, self.integration_step_id)
                    if self.fetch_fields:
                        for instance in received:
                            if "fields" not in instance:
                                values = await client.get_field_values(instance["IntegrationInstanceId"])
                                instance["fields"] = to_jsonable(values)
                    failures = 0
                except WorkflowsoftInputError as exc:
                    # Cannot heal by waiting (credentials refused, unknown step, bad connection).
                    yield TriggerEvent(self._error(str(exc), received))
                    return
                except (TimeoutError, WorkflowsoftError, OSError) as exc:
                    failures += 1
                    if drain is not None:
                        received = drain.instances
                    if received:
                        log.warning("Reading new integration instances failed (%s); handing over the %d received",
                                    exc, len(received))
                        yield TriggerEvent({"status": "success", "instances": received, "warning": str(exc)})
                        return
                    if failures >= self.max_consecutive_failures:
                        yield TriggerEvent(self._error(
                            f"Polling integration step {self.integration_step_id} failed "
                            f"{failures} times in a row; last error: {exc}", received))
                        return
                    wait = self._failure_wait(failures)
                    log.warning("Polling integration step %s failed (%s); attempt %d/%d, next in %.1f s",
                                self.integration_step_id, exc, failures, self.max_consecutive_failures, wait)
                    await self.sleep(wait)
                    continue
                if received:
                    log.info("Received %d integration instance(s) of step %s: %s", len(received),
                             self.integration_step_id, [i["IntegrationInstanceId"] for i in received])
                    event: dict[str, Any] = {"status": "success", "instances": received}
                    if self._parked:
                        event["parked"] = list(self._parked)
                    yield TriggerEvent(event)
                    return
                if self.wait_until is not None and time.time() + self.poll_interval >= self.wait_until:
                    yield TriggerEvent({"status": "timeout", "instances": []})
                    return
                await self.sleep(self.poll_interval)
        finally:
            beats.cancel()  # a beat in flight finishes in its worker; nothing waits for it
            if client is not None:
                await client.aclose()

    def _error(self, message: str, received: list[dict[str, Any]]) -> dict[str, Any]:
        return {"status": "error", "message": message, "instances": received}


class WorkflowsoftIntegrationEventTrigger(_EventTriggerBase):
    """The asset watcher of an integration step: fires one event per drain of new integration instances.

    Built by :func:`~airflow_provider_workflowsoft.assets.workflowsoft.integration_step_asset`; each event
    becomes an asset event of the step's Asset and starts (or joins) a run of the DAGs scheduled on it.
    Event payload: ``{"status": "success", "integration_step_id", "asset_uri", "instances": [{
    "IntegrationInstanceId", "ProcessInstanceId", "fields"?, "reclaimed"?}, ...]}``; read it with
    :func:`~airflow_provider_workflowsoft.assets.workflowsoft.instances_from_events`.

    Nothing is lost between the poll and the run: each instance is claimed in the watcher's claims record
    (the Asset's state store on Airflow 3.3) before the next poll and before the event. The run's
    completion marks it done in the same records as the sensor path; a claim not done within
    ``reclaim_after`` (the run failed, or the triggerer died before the event was stored) is offered again
    in a later event, marked ``"reclaimed": True``. A watcher restarted by the triggerer reads its record
    back and leaves alone what it handed out within the lease: no instance is handed out twice.

    **One event in flight.** After an event the watcher polls again only once a run has taken that event's
    instances (the run's batch worker claims them, or a completion marks them done: see
    :meth:`~airflow_provider_workflowsoft.records.claims.ClaimsLedger.awaiting_run`), checking every second
    at most; claims nobody took within ``reclaim_after`` are handed out again as before. Airflow queues an
    asset-triggered run in one row per (Asset, DAG): a second event arriving before the run is created joins
    that row, and the run consumes only the events up to the row's creation, so a second event would wait for
    a later one (docs/reliability.md). So a burst larger than ``max_instances`` goes out one event per run,
    and no instance waits for a next arrival.

    It never fires an error event (an asset event means "instances arrived"): faults are retried with
    backoff forever and logged; refused credentials or an unknown step are logged as errors and retried
    every ``failure_backoff_max`` seconds, so a fixed connection heals the watcher.

    :param integration_step_id: the integration step to poll
    :param process_diagram_name: with ``integration_step_name``, the step by name (looked up in the triggerer)
    :param integration_step_name: the integration step's title in that process diagram
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :param max_instances: the most instances one event carries
    :param poll_interval: seconds between polls when nothing is new
    :param reclaim_after: the claims' lease, in seconds
    :param fetch_fields: also read each instance's fields into ``"fields"`` (after it is claimed)
    :param asset_uri: the URI of the Asset this trigger watches (names its claims record and is carried in each
        event); empty (the ``MessageQueueTrigger`` form, which does not know its Asset): the step's URI
        (:func:`~airflow_provider_workflowsoft.assets.workflowsoft.integration_step_uri`) names the record, and the
        events carry no ``asset_uri``
    :param client_options: :class:`~airflow_provider_workflowsoft.api.client.ClientConfig` fields that win over
        the connection (JSON-safe values)
    :param failure_backoff_max: the longest wait, in seconds, between failed rounds
    :param max_offers: an instance handed out this many times without being completed is parked (kept in the
        watcher's record, not handed out again until released); ``None`` or ``0``: never park
    """

    def __init__(
        self,
        integration_step_id: int | None = None,
        *,
        process_diagram_name: str | None = None,
        integration_step_name: str | None = None,
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
        max_instances: int = 100,
        poll_interval: float | dt.timedelta = 30.0,
        reclaim_after: float | dt.timedelta = 3600.0,
        fetch_fields: bool = False,
        asset_uri: str = "",
        client_options: dict[str, Any] | None = None,
        failure_backoff_max: float = 300.0,
        max_offers: int | None = DEFAULT_MAX_OFFERS,
    ) -> None:
        super().__init__()
        step_ref = StepRef(integration_step_id, process_diagram_name, integration_step_name)  # one of them given
        if not isinstance(asset_uri, str):
            raise WorkflowsoftInputError(
                f"asset_uri must be the watched Asset's URI (text) or empty, got {asset_uri!r}")
        settings = watcher_settings(max_instances, poll_interval, reclaim_after, max_offers)
        self.integration_step_id = step_ref.step_id()
        self.process_diagram_name = None if self.integration_step_id is not None else process_diagram_name
        self.integration_step_name = None if self.integration_step_id is not None else integration_step_name
        self.workflowsoft_conn_id = workflowsoft_conn_id
        self.max_instances: int = settings["max_instances"]
        self.poll_interval: float = settings["poll_interval"]
        self.reclaim_after: float = settings["reclaim_after"]
        self.fetch_fields = bool(fetch_fields)
        self.asset_uri = asset_uri.strip()
        #: names the watcher's claims record: the Asset's URI, else the step's
        self.record_uri = self.asset_uri or integration_step_uri(
            self.integration_step_id, process_diagram_name=self.process_diagram_name,
            integration_step_name=self.integration_step_name, workflowsoft_conn_id=workflowsoft_conn_id)
        self.client_options = dict(client_options or {})
        self.failure_backoff_max = float(failure_backoff_max)
        self.max_offers: int | None = settings["max_offers"]
        #: tests replace these (a transport, stores, the clock of waits)
        self.client_factory: Callable[[Any], Any] | None = None
        self.claims_store: Any = None
        self.own_store: Any = None
        self.sleep: Callable[[float], Any] = asyncio.sleep

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            EVENT_CLASSPATH,
            {
                "integration_step_id": self.integration_step_id,
                "process_diagram_name": self.process_diagram_name,
                "integration_step_name": self.integration_step_name,
                "workflowsoft_conn_id": self.workflowsoft_conn_id,
                "max_instances": self.max_instances,
                "poll_interval": self.poll_interval,
                "reclaim_after": self.reclaim_after,
                "fetch_fields": self.fetch_fields,
                "asset_uri": self.asset_uri,
                "client_options": dict(self.client_options),
                "failure_backoff_max": self.failure_backoff_max,
                "max_offers": self.max_offers,
            },
        )

    async def _client(self) -> Any:
        return await async_client(self.workflowsoft_conn_id, self.client_options, self.client_factory)

    def _own_store(self) -> Any:
        """Where the watcher's own claims record lives.

        Its Asset's state store (Airflow 3.3), else with the others in Variables.
        """
        if self.own_store is not None:
            return self.own_store
        accessors = getattr(self, "asset_state_store", None)
        if accessors is None:  # Airflow before 3.3: the record lives with the other claims, in Variables
            return None
        if not self.asset_uri:  # the MessageQueueTrigger form: its one watched Asset's accessor
            return AssetStateStore(accessors, self.record_uri)
        try:
            accessor = accessors[asset_classes()[0](name=self.asset_uri, uri=self.asset_uri)]
        except (KeyError, TypeError, ImportError):
            accessor = accessors  # one watched Asset: the accessors act as its accessor
        return AssetStateStore(accessor, self.asset_uri)

    def _claims(self) -> ClaimsLedger:
        owner = naming.watcher_owner(self.record_uri)
        own = self._own_store()
        if own is not None or AIRFLOW_V_3_3_PLUS:
            return ClaimsLedger(self.workflowsoft_conn_id, self.claims_store, owner=owner, own_store=own)
        # Airflow 3.1: no Asset state store, and a triggerer that lists no Variables. The record is a Variable (the
        # key it has in the Asset's state store on 3.3); each event names an ack slot where the run that takes it
        # mirrors its claims, and the watcher reads those slots instead of listing the runs' records.
        variables = self.claims_store if self.claims_store is not None else VariableStore()
        key = naming.claims_key(self.workflowsoft_conn_id, owner)
        ack = naming.ack_key(self.workflowsoft_conn_id, owner, uuid.uuid4().hex[:12])  # this round's event
        return ClaimsLedger(self.workflowsoft_conn_id, WatcherVariableStore(variables, key), owner=owner,
                            own_store=variables, ack=ack)

    async def _step(self, client: Any) -> Any:
        if self.integration_step_id is None:
            self.integration_step_id = await self._step_ref().resolve_async(client)
            log.info("Integration step %s is %s", self._step_ref().describe(), self.integration_step_id)
        return self.integration_step_id

    def _step_ref(self) -> StepRef:
        return StepRef(self.integration_step_id, self.process_diagram_name, self.integration_step_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:  # type: ignore[override]
        failures = 0
        client = None
        lease = dt.timedelta(seconds=self.reclaim_after)
        metrics = DrainMetrics()
        # Whether an event may still wait for its run: at the start too (a restarted watcher may have fired one).
        in_flight = True
        last_event: list[Any] | None = None  # the ids of the last event fired (None after a restart)
        try:
            while True:
                drain: Drain | None = None
                # Read back at every round: a claim released by hand (the DAG paused, the key deleted through
                # Airflow's REST API) stays released.
                claims = self._claims()
                step: Any = self.integration_step_id
                if step is None:
                    step = self._step_ref().describe()
                try:
                    if client is None:
                        client = await self._client()
                    step = await self._step(client)
                    offered, held = await in_thread(claims.prepare_drain, step, lease, self.max_instances,
                                                    own_at_once=False, max_offers=self.max_offers)
                    metrics.prepared(claims, step, len(offered))
                    if in_flight and not offered:
                        waiting = await in_thread(claims.awaiting_run, step, lease, last_event)
                        if waiting:  # a new event before a run took the last one would wait in Airflow's queue
                            log.debug("Integration instance(s) %s of step %s not taken by a run yet: not polling",
                                      waiting, step)
                            await self.sleep(min(self.poll_interval, ACK_CHECK_SECONDS))
                            continue
                        in_flight = False
                    drain = Drain(self.max_instances, taken=offered, skip=held, keep=claims.keeps)
                    try:
                        await drain_and_claim(client, step, drain, claims)
                    finally:
                        if drain.instances and self.fetch_fields:
                            await self._read_fields(client, drain.instances)
                    await metrics.drained(claims, step)
                    failures = 0
                except WorkflowsoftInputError as exc:
                    log.error("Watching integration step %s: %s; trying again in %.0f s (fix the connection "
                              "or the step)", step, exc, self.failure_backoff_max)
                    if drain is not None and drain.instances:
                        yield TriggerEvent(self._payload(step, drain.instances, claims.ack))
                        in_flight, last_event = True, [i["IntegrationInstanceId"] for i in drain.instances]
                    if client is not None:
                        await client.aclose()
                        client = None  # the connection is read again
                    await self.sleep(self.failure_backoff_max)
                    continue
                except Exception as exc:  # transient faults, and what a watcher must outlive (a missing connection)
                    failures += 1
                    wait = failure_wait(self.poll_interval, failures, self.failure_backoff_max)
                    transient = isinstance(exc, TimeoutError | WorkflowsoftError | OSError)
                    log.log(logging.WARNING if transient else logging.ERROR,
                            "Watching integration step %s: a round failed (%s: %s); attempt %d, next in %.1f s",
                            step, type(exc).__name__, exc, failures, wait)
                    if drain is not None and drain.instances:  # each of them is claimed: hand them over
                        yield TriggerEvent(self._payload(step, drain.instances, claims.ack))
                        in_flight, last_event = True, [i["IntegrationInstanceId"] for i in drain.instances]
                    if not transient and client is not None:
                        await client.aclose()
                        client = None  # the connection is read again
                    await self.sleep(wait)
                    continue
                if drain.instances:
                    log.info("Handing %d integration instance(s) of step %s to a DAG run (drain stopped: %s): %s",
                             len(drain.instances), step, drain.reason or "limit",
                             [i["IntegrationInstanceId"] for i in drain.instances])
                    yield TriggerEvent(self._payload(step, drain.instances, claims.ack))
                    in_flight, last_event = True, [i["IntegrationInstanceId"] for i in drain.instances]
                    if drain.reason == "limit":
                        continue  # more may be waiting: poll again as soon as a run took this event
                await self.sleep(self.poll_interval)
        finally:
            if client is not None:
                await client.aclose()

    async def _read_fields(self, client: Any, instances: list[dict[str, Any]]) -> None:
        for instance in instances:
            if "fields" not in instance:
                try:
                    instance["fields"] = to_jsonable(await client.get_field_values(instance["IntegrationInstanceId"]))
                except (TimeoutError, WorkflowsoftError, OSError) as exc:  # the task reads them itself
                    log.warning("Reading the fields of integration instance %s failed: %s",
                                instance["IntegrationInstanceId"], exc)
                    return

    def _payload(self, step: Any, instances: list[dict[str, Any]], ack: str | None = None) -> dict[str, Any]:
        # ack: the event's ack slot (Airflow 3.1), in each instance: the run's claims of it name the slot
        payload: dict[str, Any] = {"status": "success", "integration_step_id": step,
                                   "instances": [{**i, "ack": ack} if ack else dict(i) for i in instances]}
        if self.asset_uri:
            payload["asset_uri"] = self.asset_uri
        return payload


__all__ = ["WorkflowsoftIntegrationEventTrigger", "WorkflowsoftIntegrationTrigger", "watcher_settings"]
