"""The batch worker's engine: drain, claim and process many integration instances with bounded concurrency.

No Airflow in it: :class:`~airflow_provider_workflowsoft.operators.batch.WorkflowsoftIntegrationWorkerOperator`
runs it inside a task; benchmarks and tests run it directly.

It uses the same rules as the sensor and the operators, not copies of them:

* what to offer again and what to leave to other runs: :meth:`ClaimsLedger.prepare_drain`;
* when to stop polling: :class:`~airflow_provider_workflowsoft.api.drain.Drain`;
* how one instance is completed: the client's ``update_and_complete`` (the one completion sequence).

Bookkeeping (group commit): pollers hand their answers to one committer thread, which claims everything
polled since its last write in **one** write of this task instance's claims record, then hands the
instances to the workers. No instance is processed before its claim is durable, and a claim waits for at
most the write in flight: the window in which a hard kill can lose a handed-out instance is one store round
trip. Done marks ride along with the next claim write (and are flushed every few seconds once polling has
ended); a done mark lost to a kill only makes a later run offer the instance again, and the completion then
answers "already completed", which counts as success for a re-offered instance.

**Claims before hand-over (scale-out).** Several runs may drain one step at once (mapped task instances spread over
Celery workers): after each claim write, and before anything is handed to the callable, the run reads the other
claims records (:meth:`ClaimsLedger.contested`) and yields what another poller holds too, so no instance is worked on
by two of them, whether the server hands an instance out once or until it is completed.

**Leases kept alive.** While it works, the run renews the claims of the instances it holds (queued or in flight)
every third of ``reclaim_after`` (:class:`~airflow_provider_workflowsoft.records.leases.LeaseKeeper`: one write of its
record per beat), so an instance whose work takes longer than the lease is not offered again to another run; a run
that dies stops renewing, and its claims come back one lease after its last beat.

**Graceful stop.** :meth:`WorkerEngine.stop` (the operator's ``on_kill``: SIGTERM from Airflow's task runner on a
task timeout, a task marked failed, a worker's shutdown; and any exception reaching the run, such as
``AirflowTaskTimeout`` or ``KeyboardInterrupt``) stops the polls, hands back at once the claims of the instances not
started yet (released: the next run offers them at once, see :meth:`ClaimsLedger.hand_back`), lets the instances in
flight finish within ``grace_period`` seconds, writes their done marks and closes the record. Instances still in
flight after the grace period stay claimed (offered again after the lease).

**Bounded report.** The report holds counts, every failure, and at most ``report_ids_limit`` ids (and their
written values) per list, whatever the batch size; ``full_report=True`` keeps everything.

While it runs, a progress line is logged every ``progress_interval`` seconds (received, completed, failed,
rate, elapsed), and a :class:`RunObserver` (the operator's is Airflow's metrics) hears of every finished
instance and every re-offered claim.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import field_values, to_jsonable
from airflow_provider_workflowsoft.api.protocol import deprecated, given_instances, renamed_argument
from airflow_provider_workflowsoft.defaults import DEFAULT_PROGRESS_INTERVAL_SECONDS
from airflow_provider_workflowsoft.records.claims import checked_max_offers
from airflow_provider_workflowsoft.records.leases import LeaseKeeper

if TYPE_CHECKING:
    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
    from airflow_provider_workflowsoft.records.claims import ClaimsLedger

log = logging.getLogger(__name__)

#: Longest error text kept per failed instance in the report (XCom stays small).
MAX_ERROR_CHARS = 2000
#: Longest error text of a failure beyond the first ``report_ids_limit`` ones (every failure is listed).
SHORT_ERROR_CHARS = 200
#: Seconds the instances in flight may take to finish after a stop (SIGTERM) before the run ends without them.
#: Airflow's supervisor sends SIGKILL 5 s after its SIGTERM: this leaves time for the last record writes.
DEFAULT_GRACE_PERIOD = defaults.DEFAULT_GRACE_PERIOD_SECONDS
#: The most ids (and written values) per list in the report, unless told otherwise.
DEFAULT_REPORT_IDS_LIMIT = defaults.DEFAULT_REPORT_IDS_LIMIT
#: Once polling has ended, done marks are written at most this often (seconds).
DONE_FLUSH_SECONDS = 2.0
#: How often the run looks up from waiting for its instances (a stop is seen within this, seconds).
COLLECT_WAKE_SECONDS = 0.25
#: Seconds between two progress lines of a run, unless told otherwise.
DEFAULT_PROGRESS_INTERVAL = DEFAULT_PROGRESS_INTERVAL_SECONDS


class RunObserver:
    """What a batch run reports while it runs (the operator passes one sending Airflow metrics).

    This base class ignores everything. Called from worker threads: methods must be quick and thread-safe.
    """

    def instance_finished(self, step: Any, completed: bool, seconds: float) -> None:
        """One instance was completed (``completed``) or failed, after ``seconds`` of processing."""

    def reclaimed(self, step: Any, count: int) -> None:
        """``count`` claims of earlier runs (or tries) were offered again."""

    def drain_prepared(self, step: Any, parked: Sequence[Any], interrupted: Sequence[Mapping[str, Any]]) -> None:
        """Hear that preparing the drain parked ``parked`` and found ``interrupted`` traces of killed drains."""


def checked_interval(progress_interval: Any) -> float | None:
    """``progress_interval`` checked: seconds > 0, or ``None``/``0`` for no progress lines."""
    if progress_interval is None or progress_interval == 0:
        return None
    if isinstance(progress_interval, bool) or not isinstance(progress_interval, int | float) or not (
        0 < progress_interval < float("inf")
    ):
        raise WorkflowsoftInputError(
            f"progress_interval must be a number of seconds above 0 (or None for no progress lines), "
            f"got {progress_interval!r}"
        )
    return float(progress_interval)


def checked_sizes(max_workers: int, pollers: int | None, max_instances: int) -> int:
    """Refuse impossible sizes (naming the argument and its value); return the number of pollers.

    ``pollers`` defaults to ``max_workers``: one poller alone caps throughput at one poll round trip per
    instance, whatever the number of workers.
    """
    pollers = max_workers if pollers is None else pollers
    for name, value, least in (("max_workers", max_workers, 1), ("pollers", pollers, 1),
                               ("max_instances", max_instances, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise WorkflowsoftInputError(f"{name} must be a whole number of {least} or more, got {value!r}")
    return pollers


def checked_unclaimed(max_unclaimed: int | None, pollers: int) -> int:
    """``max_unclaimed`` checked (a whole number >= 1), default ``2 x pollers``."""
    if max_unclaimed is None:
        return 2 * pollers
    if isinstance(max_unclaimed, bool) or not isinstance(max_unclaimed, int) or max_unclaimed < 1:
        raise WorkflowsoftInputError(f"max_unclaimed must be a whole number of 1 or more, got {max_unclaimed!r}")
    return max_unclaimed


def normalise_instances(instances: Any) -> list[dict[str, Any]]:
    """Instance dicts from what :func:`~.protocol.given_instances` reads (a sensor's XCom), deduplicated, order kept."""
    result: dict[int, dict[str, Any]] = {}
    for iid, raw in given_instances(instances, "instances"):
        if iid in result:
            continue
        item: dict[str, Any] = {"IntegrationInstanceId": iid}
        if isinstance(raw, Mapping):
            if raw.get("ProcessInstanceId") is not None:
                item["ProcessInstanceId"] = raw["ProcessInstanceId"]
            if raw.get("reclaimed"):
                item["reclaimed"] = True
            if raw.get("ack"):  # an asset watcher's event slot (Airflow 3.1): the claim mirrors itself there
                item["ack"] = str(raw["ack"])
        result[iid] = item
    return list(result.values())


def _accepts_instance(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "instance" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def error_text(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_grace(grace_period: Any) -> float:
    """``grace_period`` checked: seconds >= 0 (a number or a timedelta)."""
    if isinstance(grace_period, dt.timedelta):
        grace_period = grace_period.total_seconds()
    if isinstance(grace_period, bool) or not isinstance(grace_period, int | float) or not (
        0 <= grace_period < float("inf")
    ):
        raise WorkflowsoftInputError(
            f"grace_period must be a number of seconds of 0 or more (or a timedelta), got {grace_period!r}")
    return float(grace_period)


def checked_report_limit(report_ids_limit: Any) -> int | None:
    """``report_ids_limit`` checked: a whole number >= 0 (``None``: no limit)."""
    if report_ids_limit is None:
        return None
    if isinstance(report_ids_limit, bool) or not isinstance(report_ids_limit, int) or report_ids_limit < 0:
        raise WorkflowsoftInputError(
            f"report_ids_limit must be a whole number of 0 or more (None: no limit), got {report_ids_limit!r}")
    return report_ids_limit


def _shortened(text: str) -> str:
    return text if len(text) <= SHORT_ERROR_CHARS else text[: SHORT_ERROR_CHARS - 3] + "..."


class _HandedBack(Exception):
    """An instance the run stopped before starting: its claim is handed back, not failed."""


class WorkerEngine:
    """Drain, claim and process integration instances with bounded concurrency.

    :param api: the client every request goes through (anything with its ``poll_new_integration``,
        ``get_fields`` and ``update_and_complete``)
    :param python_callable: ``f(fields, instance=..., **op_kwargs) -> dict | None``
    :param integration_step_id: the step to poll (needed unless ``instances`` are given;
        ``integration_diagram_id``, its 0.1 name, still works)
    :param claims: this task instance's claims ledger (``None``: nothing is recorded)
    :param max_instances: most instances received by polling in one run
    :param max_workers: callables running at the same time
    :param pollers: threads polling at the same time (default: ``max_workers``)
    :param max_unclaimed: the most poll answers that may be waiting for their claim write at any moment
        (polls in flight included): what a hard kill can lose at most against a server that hands an
        instance out once. Default ``2 x pollers`` (full speed); ``1`` polls only once the previous answer
        is durably claimed (at most one instance at risk, at the cost of one store write per poll).
    :param op_kwargs: extra keyword arguments of every call
    :param reclaim_after: the claims' lease; ``None`` never takes over other runs' claims
    :param progress_interval: seconds between two progress lines in the log while the run goes on (``None``:
        none)
    :param observer: hears of every finished instance and re-offered claims (metrics)
    :param clock: the run's clock, in seconds (elapsed times, rates, instance durations)
    :param max_offers: an instance handed out this many times without being completed is parked by the drain
        instead of offered again (``None`` or ``0``: never park); see :meth:`ClaimsLedger.prepare_drain`
    :param grace_period: seconds the instances in flight may take to finish after :meth:`stop`
    :param report_ids_limit: the most ids (and written values) per list of the report (``None``: no limit); counts
        and every failure are always there
    :param full_report: every id and every instance's written values in the report, whatever ``report_ids_limit``
    """

    def __init__(
        self,
        api: WorkflowsoftClient,
        python_callable: Callable[..., Any],
        *,
        integration_step_id: int | str | None = None,
        claims: ClaimsLedger | None = None,
        max_instances: int = 100,
        max_workers: int = 8,
        pollers: int | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        reclaim_after: dt.timedelta | None = dt.timedelta(hours=1),
        max_unclaimed: int | None = None,
        progress_interval: float | None = DEFAULT_PROGRESS_INTERVAL,
        observer: RunObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_offers: int | None = None,
        integration_diagram_id: int | str | None = None,
        grace_period: float | dt.timedelta = DEFAULT_GRACE_PERIOD,
        report_ids_limit: int | None = DEFAULT_REPORT_IDS_LIMIT,
        full_report: bool = False,
    ) -> None:
        self.pollers = checked_sizes(max_workers, pollers, max_instances)
        self.progress_interval = checked_interval(progress_interval)
        self.observer = observer if observer is not None else RunObserver()
        self.clock = clock
        self.max_unclaimed = checked_unclaimed(max_unclaimed, self.pollers)
        self.api = api
        self.python_callable = python_callable
        self.integration_step_id = renamed_argument(integration_step_id, integration_diagram_id,
                                                    new="integration_step_id", old="integration_diagram_id",
                                                    owner=type(self).__name__)
        self.claims = claims
        self.max_instances = max_instances
        self.max_workers = max_workers
        self.op_kwargs = dict(op_kwargs or {})
        self.reclaim_after = reclaim_after
        self.max_offers = checked_max_offers(max_offers)
        self.grace_period = checked_grace(grace_period)
        self.report_ids_limit = checked_report_limit(report_ids_limit)
        self.full_report = bool(full_report)
        #: every instance's outcome, whatever the report keeps: ``{"succeeded", "results", "failed", "skipped"}``
        self.outcomes: dict[str, Any] = {}
        self._pass_instance = _accepts_instance(python_callable)
        # One lock, two conditions: pollers wait for room (a slot under the bounds), the committer for
        # answers. Each event wakes only whom it concerns: 32 threads woken on every event cost more CPU
        # than the requests themselves.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._answers = threading.Condition(self._lock)
        self._done: list[int | str] = []  # completed, done mark not written yet
        self._outstanding = 0  # submitted to the workers, not finished yet
        self._counts = {"received": 0, "completed": 0, "failed": 0, "reclaimed": 0}  # for progress lines
        # Held: submitted and not finished (their leases are renewed); started: reached the callable's thread.
        self._held: set[int | str] = set()
        self._started: set[int | str] = set()
        self._handed_back: set[int | str] = set()
        self._stop_reason: str | None = None
        self._stop_at: float | None = None
        self._drain_state: Drain | None = None

    # -- one instance -------------------------------------------------------------------------------

    def process_one(self, instance: dict[str, Any], *, already_completed_ok: bool = False) -> dict[str, Any]:
        """Read, call, write and complete one instance; returns ``{"IntegrationInstanceId", "fields", ...}``."""
        iid = instance["IntegrationInstanceId"]
        fields = self.api.get_fields(iid)
        kwargs = dict(self.op_kwargs)
        if self._pass_instance:
            kwargs["instance"] = dict(instance)
        values = self.python_callable(field_values(fields), **kwargs)
        if values is not None and not isinstance(values, Mapping):
            raise WorkflowsoftInputError(
                f"The callable returned {type(values).__name__} for integration instance {iid}; "
                "return a dict of field values to write, or None to complete without writing"
            )
        outcome = self.api.update_and_complete(iid, values, fields=fields, already_completed_ok=already_completed_ok)
        with self._lock:
            self._done.append(iid)
        return {"IntegrationInstanceId": iid, "fields": to_jsonable(outcome.get("fields") or {}),
                "already_completed": bool(outcome.get("already_completed"))}

    def _run_one(self, instance: dict[str, Any], already_completed_ok: bool) -> dict[str, Any]:
        """:meth:`process_one`, counted and timed (progress lines, the observer); not started once the run stops."""
        iid = instance["IntegrationInstanceId"]
        with self._lock:
            if self._stop_reason is not None or iid in self._handed_back:
                self._handed_back.add(iid)
                self._held.discard(iid)
                raise _HandedBack(iid)
            self._started.add(iid)
        started = self.clock()
        try:
            result = self.process_one(instance, already_completed_ok=already_completed_ok)
        except BaseException:
            self._count_finished(False, started)
            raise
        finally:
            with self._lock:
                self._held.discard(iid)
        self._count_finished(True, started)
        return result

    @property
    def integration_diagram_id(self) -> int | str | None:
        """The 0.4 name of :attr:`integration_step_id` (deprecated)."""
        deprecated("WorkerEngine.integration_diagram_id is deprecated: use integration_step_id")
        return self.integration_step_id

    # -- stopping -----------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Stop the run gracefully: no more polls, the instances not started handed back, those in flight finished.

        Safe to call from a signal handler (the operator's ``on_kill``) and from any thread: it only sets a flag and
        wakes the run's threads from a thread of its own. The run then hands back the claims of the instances not
        started yet, waits up to ``grace_period`` seconds for those in flight, closes its record and returns its report
        with ``"stopped"`` (the operator then fails the task, naming what was handed back).
        """
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        self._stop_at = self.clock()
        threading.Thread(target=self._wake_all, name="workflowsoft-stop", daemon=True).start()

    def _wake_all(self) -> None:
        with self._lock:
            drain = self._drain_state
            if drain is not None and not drain.finished:
                drain.finished, drain.reason = True, f"the run was stopped ({self._stop_reason})"
            self._room.notify_all()
            self._answers.notify_all()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop_reason is not None

    def _held_ids(self) -> list[int | str]:
        with self._lock:
            return [i for i in self._held if i not in self._handed_back]

    def _hand_back_not_started(self) -> list[int | str]:
        """Hand back (one write) the claims of every instance submitted and not started; returns their ids."""
        with self._lock:
            self._handed_back |= self._held - self._started
            back = sorted(self._handed_back, key=str)
            self._held -= self._handed_back
        if back and self.claims is not None:
            try:
                self.claims.hand_back(back)
            except Exception as exc:  # they stay claimed: offered again after the lease instead of at once
                log.error("Handing back %d claim(s) failed (%s); they are offered again after the lease",
                          len(back), error_text(exc))
        if back:
            log.warning("Stopping (%s): handed back %d integration instance(s) not started (offered again at once "
                        "by the next run): %s", self._stop_reason, len(back), back[:20])
        return back

    def _count_finished(self, completed: bool, started: float) -> None:
        seconds = self.clock() - started
        with self._lock:
            self._counts["completed" if completed else "failed"] += 1
        self._tell(self.observer.instance_finished, self.integration_step_id, completed, seconds)

    @staticmethod
    def _tell(method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # metrics never fail an instance or a run
            log.debug("The run observer failed: %s", exc)

    def progress_line(self, started: float) -> str:
        """Return the progress of the run so far, in one line."""
        with self._lock:
            counts = dict(self._counts)
        elapsed = max(self.clock() - started, 0.0)
        finished = counts["completed"] + counts["failed"]
        rate = finished / elapsed if elapsed > 0 else 0.0
        reclaimed = f" ({counts['reclaimed']} reclaimed)" if counts["reclaimed"] else ""
        return (f"Progress: {counts['received']} received{reclaimed}, {counts['completed']} completed, "
                f"{counts['failed']} failed, {rate:.1f} per second, {elapsed:.1f} s elapsed")

    def _report_progress(self, started: float, stop: threading.Event) -> None:
        assert self.progress_interval is not None
        while not stop.wait(self.progress_interval):
            log.info("%s", self.progress_line(started))

    # -- the run ------------------------------------------------------------------------------------

    def run(self, instances: Sequence[Any] | None = None) -> dict[str, Any]:
        """Process ``instances`` (ids or dicts), or drain new ones (re-offered claims first, then polls).

        :return: the JSON-safe report: counts (``"processed"``, ``"received"``, ``"succeeded_count"``,
            ``"failed_count"``, ``"skipped_count"``, ``"already_completed_count"``), every failure (``"failed"``), at
            most ``report_ids_limit`` ids in ``"succeeded"``, ``"skipped"`` (and their written values in
            ``"results"``), ``"fields_written"``, ``"truncated"``, ``"seconds"``; after a stop ``"stopped"``,
            ``"handed_back"`` and ``"in_flight_at_stop"``
        """
        started = self.clock()
        report: dict[str, Any] = {"processed": 0, "parked": []}
        self.outcomes = {"succeeded": [], "results": {}, "failed": [], "skipped": [], "handed_back": [],
                         "in_flight": [], "already_completed": 0, "yielded": []}
        futures: dict[concurrent.futures.Future[dict[str, Any]], dict[str, Any]] = {}
        errors: list[str] = []
        received = 0
        stop_progress = threading.Event()
        if self.progress_interval is not None:
            threading.Thread(target=self._report_progress, args=(started, stop_progress),
                             name="workflowsoft-progress", daemon=True).start()
        lease = LeaseKeeper(self.claims, self.reclaim_after, held=self._held_ids).start()
        pool = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="workflowsoft-worker")
        collected: set[concurrent.futures.Future[dict[str, Any]]] = set()
        try:

            def submit(instance: dict[str, Any], already_ok: bool) -> None:
                with self._lock:
                    self._outstanding += 1
                    self._counts["received"] += 1
                    self._held.add(instance["IntegrationInstanceId"])
                future = pool.submit(self._run_one, instance, already_ok)
                future.add_done_callback(self._finished_one)
                futures[future] = instance

            try:
                if instances is not None:
                    received = self._offer_given(normalise_instances(instances), submit, self.outcomes)
                else:
                    received = self._drain(submit, errors, report)
                self._collect(futures, collected)
            except BaseException as exc:  # a task timeout, an interrupt: the same graceful stop, then it goes on
                self.stop(type(exc).__name__)
                self._collect(futures, collected)
                self._finish()
                raise
        finally:
            # after a stop the instances still in flight are not waited for beyond the grace period
            pool.shutdown(wait=not self.stopping, cancel_futures=self.stopping)
            lease.stop()
            stop_progress.set()
        self._finish()
        report["processed"] = len(futures) - len(self.outcomes["handed_back"])
        report["received"] = received
        if errors:
            report["poll_error"] = errors[0]
        report["lease_renewals"] = lease.renewals
        report.update(self.bounded_report())
        report["seconds"] = round(self.clock() - started, 3)
        return report

    def bounded_report(self) -> dict[str, Any]:
        """Return the outcomes as the report keeps them: counts, every failure, ``report_ids_limit`` ids per list.

        With ``full_report``, every id and every written value.
        """
        out = self.outcomes
        limit = None if self.full_report else self.report_ids_limit
        succeeded = sorted(out["succeeded"], key=str)
        failed = sorted(out["failed"], key=lambda f: str(f["IntegrationInstanceId"]))
        skipped = sorted(out["skipped"], key=str)

        def cap(ids: list[Any]) -> list[Any]:
            return ids if limit is None else ids[:limit]

        shown = cap(succeeded)
        report: dict[str, Any] = {
            "succeeded": shown,
            "results": {str(i): out["results"].get(str(i), {}) for i in shown},
            # every failure; beyond the first report_ids_limit ones, with a shorter error text
            "failed": [f if limit is None or n < limit else {**f, "error": _shortened(f["error"])}
                       for n, f in enumerate(failed)],
            "skipped": cap(skipped),
            "succeeded_count": len(succeeded),
            "failed_count": len(failed),
            "skipped_count": len(skipped),
            # claimed by this run and by another poller of the step at once: left to it (claims before hand-over)
            "yielded": cap(sorted(out.get("yielded", []), key=str)),
            "yielded_count": len(out.get("yielded", [])),
            "already_completed_count": out["already_completed"],
            "fields_written": sorted({k for v in out["results"].values() for k in (v or {})}),
            "report_ids_limit": limit,
            "truncated": limit is not None and max(len(succeeded), len(skipped), len(out.get("yielded", []))) > limit,
        }
        if self.stopping:
            report["stopped"] = self._stop_reason
            report["handed_back"] = cap(sorted(out["handed_back"], key=str))
            report["handed_back_count"] = len(out["handed_back"])
            report["in_flight_at_stop"] = sorted(out["in_flight"], key=str)
            report["truncated"] = report["truncated"] or (limit is not None and len(out["handed_back"]) > limit)
        return report

    def _finished_one(self, _future: concurrent.futures.Future[dict[str, Any]]) -> None:
        with self._lock:
            self._outstanding -= 1
            self._room.notify()  # a poller may poll again

    def _collect(self, futures: dict[concurrent.futures.Future[dict[str, Any]], dict[str, Any]],
                 collected: set[concurrent.futures.Future[dict[str, Any]]]) -> None:
        """Wait for every instance, writing done marks every few seconds meanwhile.

        After a stop: hand back the instances not started, then wait for those in flight up to the grace period.
        """
        out = self.outcomes
        pending = set(futures) - collected
        handed_back = False
        last_flush = self.clock()
        while pending:
            timeout = COLLECT_WAKE_SECONDS
            if self.stopping:
                if not handed_back:
                    out["handed_back"] = self._hand_back_not_started()
                    handed_back = True
                    back = set(out["handed_back"])
                    for future in [f for f in pending if futures[f]["IntegrationInstanceId"] in back]:
                        future.cancel()  # not waited for: a worker that picks it up skips it
                        pending.discard(future)
                        collected.add(future)
                assert self._stop_at is not None
                remaining = self._stop_at + self.grace_period - self.clock()
                if remaining <= 0:
                    break
                timeout = min(timeout, remaining)
            finished, pending = concurrent.futures.wait(pending, timeout=timeout)
            for future in finished:
                collected.add(future)
                iid = futures[future]["IntegrationInstanceId"]
                try:
                    outcome = future.result()
                except _HandedBack:
                    continue
                except concurrent.futures.CancelledError:
                    continue
                except Exception as exc:
                    log.error("Integration instance %s failed: %s", iid, error_text(exc))
                    out["failed"].append({"IntegrationInstanceId": iid, "error": error_text(exc)})
                    continue
                out["succeeded"].append(iid)
                out["results"][str(iid)] = outcome["fields"]
                out["already_completed"] += bool(outcome.get("already_completed"))
            if pending and self.clock() - last_flush >= DONE_FLUSH_SECONDS:
                self._write_done_marks()
                last_flush = self.clock()
        if self.stopping and not handed_back:
            out["handed_back"] = self._hand_back_not_started()
        if pending:
            out["in_flight"] = [futures[f]["IntegrationInstanceId"] for f in pending]
            log.warning("Stopping (%s): %d integration instance(s) still in flight after the %.1f s grace period "
                        "stay claimed (offered again after the lease): %s", self._stop_reason, len(pending),
                        self.grace_period, out["in_flight"])

    def _hand_over(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the claimed ``instances`` no other poller holds; the others are yielded (claims before hand-over).

        :meth:`ClaimsLedger.contested` after the claim write: of two pollers of the step (mapped batch workers) that
        claimed one instance, at least one yields it, so no instance is worked on by both. A failing read hands them
        over (the claim is written; the rule of a single poller).
        """
        if self.claims is None:
            return instances
        ids = [i["IntegrationInstanceId"] for i in instances]
        try:
            held = self.claims.contested(ids, self.reclaim_after)
            yielded = self.claims.yield_claims(held) if held else []
        except Exception as exc:
            log.warning("Reading the other claims records failed (%s); handing over %d instance(s) as claimed",
                        error_text(exc), len(ids))
            return instances
        if not yielded:
            return instances
        with self._lock:
            self.outcomes["yielded"].extend(yielded)
        gone = set(yielded)
        return [i for i in instances if i["IntegrationInstanceId"] not in gone]

    def _write_done_marks(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        if done and self.claims is not None:
            try:
                self.claims.mark_done(done)
            except Exception as exc:  # the marks stay in the ledger and ride along with its next write
                log.warning("Writing done marks failed (%s); they are written with the next write", error_text(exc))

    def _finish(self) -> None:
        """Return the last write of this task instance's record: done marks, then closed (or deleted if empty)."""
        if self.claims is None:
            return
        with self._lock:
            done, self._done = self._done, []
        self.claims.mark_done(done, write=False)
        try:
            self.claims.close()
        except Exception as exc:  # the report must not be lost: a lost done mark only causes a re-offer
            log.error("Writing the claims record failed (%s): completed instances may be offered again, "
                      "and their completion then answers \"already completed\"", error_text(exc))

    def _offer_given(self, given: list[dict[str, Any]], submit: Callable[..., None], report: dict[str, Any]) -> int:
        """Instances handed over (a sensor's XCom): taken over in one claim write, then processed.

        Each was claimed before by whoever polled it, so "already completed" is an earlier attempt's success.
        """
        todo = []
        for instance in given:
            if self.claims is not None and self.claims.own_state(instance["IntegrationInstanceId"]) == "done":
                report["skipped"].append(instance["IntegrationInstanceId"])  # an earlier try completed it
                continue
            todo.append(instance)
        if self.claims is not None and todo:
            steps: dict[Any, Any] = {}
            if self.integration_step_id is None:  # the step of each instance's existing claim
                steps = self.claims.claimed_steps(i["IntegrationInstanceId"] for i in todo)
            by_step: dict[Any, list[dict[str, Any]]] = {}
            for instance in todo:
                step = self.integration_step_id
                if step is None:
                    step = steps.get(instance["IntegrationInstanceId"])
                by_step.setdefault(step, []).append({**instance, "shared": True})
            for step, group in by_step.items():  # one write per step (usually one)
                self.claims.claim(step, group)
        for instance in todo:
            submit(instance, True)
        return len(given)

    def _drain(self, submit: Callable[..., None], errors: list[str], report: dict[str, Any]) -> int:
        """Re-offered claims first, then concurrent polls under the drain's stop rules.

        Claimed by group commit before they are processed.
        """
        step = self.integration_step_id
        if step is None:
            raise WorkflowsoftInputError("Nothing to poll: set integration_step_id (or the diagram and step names)")
        offered: list[dict[str, Any]] = []
        skip: list[Any] = []
        if self.claims is not None and self.max_instances:
            offered, skip = self.claims.prepare_drain(step, self.reclaim_after, self.max_instances,
                                                      max_offers=self.max_offers)
            report["parked"] = list(self.claims.parked)
            report["max_offers"] = self.max_offers
            if self.claims.interrupted:
                report["interrupted_polls"] = list(self.claims.interrupted)
            self._tell(self.observer.drain_prepared, step, list(self.claims.parked), list(self.claims.interrupted))
            # the trace a kill leaves: what to look for in Workflowsoft if answers in flight are lost
            self.claims.start_polling(step, self.max_unclaimed)
        if self.claims is not None and self.claims.yielded:  # taken over by another drain of the step too
            with self._lock:
                self.outcomes["yielded"].extend(self.claims.yielded)
        if offered:
            log.info("Offering %d reclaimed integration instance(s) of step %s again first: %s", len(offered), step,
                     [i["IntegrationInstanceId"] for i in offered])
            with self._lock:
                self._counts["reclaimed"] += len(offered)
            self._tell(self.observer.reclaimed, step, len(offered))
        for instance in offered:
            submit(instance, True)
        drain = Drain(max(1, self.max_instances), taken=offered, skip=skip,
                      keep=self.claims.keeps if self.claims is not None else None)
        if not self.max_instances:
            return len(offered)
        with self._lock:
            self._drain_state = drain  # a stop ends it
            if self._stop_reason is not None:
                drain.finished, drain.reason = True, f"the run was stopped ({self._stop_reason})"
        state = {"reserved": len(offered), "polling": self.pollers, "in_flight": 0, "committing": 0,
                 "claim_failed": 0}
        polled: list[dict[str, Any]] = []  # answers waiting for their claim write
        passed: list[dict[str, Any]] = []  # answers a waiter wants: put back by the committer, not processed

        def poll_loop() -> None:
            try:
                while True:
                    with self._lock:
                        # Back-pressure: answers in flight, queued or being written never exceed max_unclaimed,
                        # so a slow or failing store bounds what a hard kill can lose.
                        # And no more polling than the workers can take up: instances polled far ahead would
                        # wait claimed in the queue, and make every claim write larger.
                        while not drain.finished and (
                            len(polled) + state["in_flight"] + state["committing"] >= self.max_unclaimed
                            or self._outstanding + len(polled) + state["in_flight"] + state["committing"]
                            >= self.max_workers + self.pollers
                        ):
                            self._room.wait()
                        if drain.finished or state["reserved"] >= self.max_instances:
                            self._room.notify_all()  # the pollers still waiting stop too
                            return
                        state["reserved"] += 1
                        state["in_flight"] += 1
                    try:
                        found = self.api.poll_new_integration(step)
                    except Exception as exc:
                        with self._lock:
                            state["in_flight"] -= 1
                            drain.finished, drain.reason = True, "a poll failed"
                            errors.append(error_text(exc))
                            self._room.notify_all()
                        log.error("Polling integration step %s failed: %s", step, error_text(exc))
                        return
                    with self._lock:
                        state["in_flight"] -= 1
                        try:
                            taken = drain.offer(found)
                            if taken:
                                polled.append(normalise_instances([found])[0])
                            elif drain.passed:
                                passed.extend(drain.take_passed())
                                state["reserved"] -= 1  # not one of this run's instances
                                self._answers.notify()
                        except Exception as exc:  # an answer this client cannot read: stop, say why
                            drain.finished, drain.reason = True, "an unreadable poll answer"
                            errors.append(f"poll answer {found!r}: {error_text(exc)}")
                            self._room.notify_all()
                            return
                        if taken:
                            self._answers.notify()
                            if drain.finished:  # the limit: every poller waiting for room may stop
                                self._room.notify_all()
                        elif drain.finished:
                            self._room.notify_all()  # every poller may stop
                        else:
                            self._room.notify()
            finally:
                with self._lock:
                    state["polling"] -= 1
                    self._answers.notify()

        def commit_loop() -> None:
            while True:
                with self._lock:
                    while not polled and not passed and state["polling"] > 0:
                        self._answers.wait()
                    if not polled and not passed:
                        return
                    batch, polled[:] = list(polled), []
                    back, passed[:] = list(passed), []
                    done, self._done = self._done, []
                    state["committing"] = len(batch)
                if self.claims is not None:
                    self.claims.mark_done(done, write=False)  # memory only: written with the next write
                if self.claims is not None and not state["claim_failed"]:
                    try:  # one write: every answer since the last one, plus the done marks waiting
                        self.claims.pass_on(step, back, write=not batch)
                        self.claims.claim(step, batch)
                    except Exception as exc:  # still processed (they were handed out), but polling stops
                        state["claim_failed"] = 1
                        with self._lock:
                            drain.finished, drain.reason = True, "a claim write failed"
                            self._room.notify_all()
                            errors.append(f"claiming instances {[i['IntegrationInstanceId'] for i in batch]} "
                                          f"failed: {error_text(exc)}")
                        log.error("Claiming integration instances failed: %s", error_text(exc))
                if batch and not state["claim_failed"]:
                    batch = self._hand_over(batch)
                with self._lock:
                    state["committing"] = 0
                    self._room.notify(len(batch))  # as many pollers may poll again
                for instance in batch:
                    submit(instance, False)

        threads = [threading.Thread(target=poll_loop, name=f"workflowsoft-poller-{i}", daemon=True)
                   for i in range(self.pollers)]
        for thread in threads:
            thread.start()
        try:
            commit_loop()
        except BaseException as exc:  # a task timeout or an interrupt lands here: stop the pollers before leaving
            self.stop(type(exc).__name__)
            with self._lock:
                drain.finished, drain.reason = True, "the run was interrupted"
                self._room.notify_all()
            try:  # what the polls in flight still receive is claimed (then handed back), not dropped
                commit_loop()
            except BaseException as again:
                log.error("Claiming the answers of the polls in flight failed: %s", error_text(again))
            raise
        for thread in threads:
            thread.join()
        if self.claims is not None and not state["claim_failed"]:
            self.claims.stop_polling()  # every answer is durably claimed: nothing is in flight any more
        log.info("Drained %d integration instance(s) of step %s (stopped: %s)", len(drain.instances), step,
                 drain.reason or "limit")
        return len(drain.instances)


def process_instances(api: WorkflowsoftClient, python_callable: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """Run a :class:`WorkerEngine` once: ``instances=`` (optional) goes to ``run``, the rest to the engine."""
    instances = kwargs.pop("instances", None)
    return WorkerEngine(api, python_callable, **kwargs).run(instances)


def failure_message(report: Mapping[str, Any]) -> str:
    """Return the task's error: every failed instance with its error."""
    lines = [f"{len(report['failed'])} of {report['processed']} integration instance(s) failed "
             "(they stay claimed and are offered again by a later run):"]
    lines += [f"  - {f['IntegrationInstanceId']}: {f['error']}" for f in report["failed"]]
    if report.get("poll_error"):
        lines.append(f"Polling stopped on an error: {report['poll_error']}")
    return "\n".join(lines)


class BatchEngine(WorkerEngine):
    """The 0.4 name of :class:`WorkerEngine` (deprecated): the same engine, with a deprecation warning."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        deprecated("BatchEngine is deprecated: use WorkerEngine (airflow_provider_workflowsoft.worker.engine)")
        super().__init__(*args, **kwargs)


__all__ = [
    "DEFAULT_PROGRESS_INTERVAL",
    "BatchEngine",
    "RunObserver",
    "WorkerEngine",
    "checked_interval",
    "checked_sizes",
    "checked_unclaimed",
    "failure_message",
    "normalise_instances",
    "process_instances",
]
