"""The provider's metrics.

Sent through Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as Airflow's ``[metrics]`` section configures them).
Every name is built here, and only here; docs/metrics.md lists them.

The layers below report plain events and know nothing of Airflow: the API clients call an ``on_request``
observer with a :class:`~airflow_provider_workflowsoft.api.protocol.RequestEvent` per HTTP request, the batch
engine a :class:`~airflow_provider_workflowsoft.worker.engine.RunObserver`, the claims' store an ``on_call``
per round trip. :class:`StatsRecorder` turns them into metrics; the hook and the operators wire it in, and only
when Airflow sends metrics at all (:func:`metrics_enabled`), so
that without metrics no request pays for them.

Names never hold an instance id, a user, a token or a connection's address: the endpoint *kind* (``poll``,
``get_fields``, ...) and the integration step id are the only variable parts, both small sets. The same values
go as tags (for OpenTelemetry, Datadog or InfluxDB-style StatsD); plain StatsD drops tags, hence the kind and
the step in the names.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.providers.common.compat.sdk import Stats, conf

from airflow_provider_workflowsoft.api.protocol import RequestEvent
from airflow_provider_workflowsoft.records.claims import parse_time
from airflow_provider_workflowsoft.worker.engine import RunObserver

log = logging.getLogger(__name__)

def stats() -> Any:
    """Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` configures it).

    The same import on every supported version: ``common.compat.sdk`` maps it to
    ``airflow.sdk.observability.stats`` on Airflow 3.3 and to ``airflow.stats`` on 2.11; both take
    ``incr/gauge/timing(stat, ..., tags=...)``.
    """
    return Stats


def metrics_enabled() -> bool:
    """Tell whether Airflow sends metrics from this process's configuration.

    Any of ``[metrics] statsd_on``, ``statsd_datadog_enabled`` or ``otel_on``; without them, nothing is measured at all.
    """
    return any(conf.getboolean("metrics", option, fallback=False)
               for option in ("statsd_on", "statsd_datadog_enabled", "otel_on"))


PREFIX = "workflowsoft"

#: Store operations that write a claims record (a claim, done marks, its closing or its deletion).
_WRITES = frozenset({"set", "delete"})


def _step_tags(step: Any) -> dict[str, str]:
    return {} if step is None else {"step": str(step)}


def _step_suffix(step: Any) -> str:
    return "" if step is None else f".{step}"


class StatsRecorder(RunObserver):
    """Turns the package's events into Airflow metrics (see the module documentation and docs/metrics.md).

    :param backend: what has ``incr``, ``timing`` and ``gauge`` like Airflow's ``Stats`` (its default)
    """

    def __init__(self, backend: Any = None) -> None:
        self.stats = backend if backend is not None else stats()
        self._rate_sent: float | None = None  # the client's pace last sent as a gauge

    # -- API requests (the clients' on_request) -------------------------------------------------------

    def request(self, event: RequestEvent) -> None:
        """One HTTP request: counted and timed by endpoint kind; errors, 429 answers and retries counted.

        The client's pace (its limiter's requests per second) is a gauge, sent when it changes; the time a request
        waited for the pace (or a shared pause after a 429) a timer.
        """
        kind = event.kind
        tags = {"kind": kind, "method": event.method, "status": "none" if event.status is None else str(event.status)}
        self.stats.incr(f"{PREFIX}.api.requests.{kind}", tags=tags)
        self.stats.timing(f"{PREFIX}.api.latency.{kind}", dt.timedelta(seconds=event.seconds), tags=tags)
        if event.status is None or event.status >= 400:
            self.stats.incr(f"{PREFIX}.api.errors.{kind}", tags=tags)
        if event.status == 429:
            self.stats.incr(f"{PREFIX}.api.throttled", tags=tags)
        if event.attempt > 1:
            self.stats.incr(f"{PREFIX}.api.retries.{kind}", tags=tags)
        if event.waited > 0:
            self.stats.timing(f"{PREFIX}.api.limiter_wait.{kind}", dt.timedelta(seconds=event.waited), tags=tags)
        rate = None if event.rate is None else round(event.rate, 1)
        if rate is not None and rate != self._rate_sent:  # a gauge only when the pace changed, not per request
            self._rate_sent = rate
            self.stats.gauge(f"{PREFIX}.api.rate_limit", rate)

    # -- the batch run (RunObserver) ------------------------------------------------------------------

    def instance_finished(self, step: Any, completed: bool, seconds: float) -> None:
        """One instance completed or failed in a batch run, with its processing time."""
        outcome = "completed" if completed else "failed"
        tags = _step_tags(step)
        self.stats.incr(f"{PREFIX}.instances.{outcome}", tags=tags)
        self.stats.timing(f"{PREFIX}.instances.{outcome}_duration", dt.timedelta(seconds=seconds), tags=tags)

    def reclaimed(self, step: Any, count: int) -> None:
        """Claims of earlier runs offered again (by the sensor or the batch worker)."""
        if count:
            self.stats.incr(f"{PREFIX}.instances.reclaimed", count, tags=_step_tags(step))

    def drain_prepared(self, step: Any, parked: Sequence[Any], interrupted: Sequence[Mapping[str, Any]]) -> None:
        """Count what preparing a drain found: the instances it parked and the killed drains' traces.

        From ``ClaimsLedger.prepare_drain``'s ``parked`` and ``interrupted``: the instances it parked, and the
        traces of drains killed while polling, each with the most poll answers it may have lost (its
        ``up_to``), tagged with the step that drain polled.
        """
        if parked:
            self.stats.incr(f"{PREFIX}.instances.parked", len(parked), tags=_step_tags(step))
        for trace in interrupted:
            tags = _step_tags(trace.get("step"))
            self.stats.incr(f"{PREFIX}.claims.interrupted_drains", tags=tags)
            up_to = trace.get("up_to")
            if isinstance(up_to, int) and not isinstance(up_to, bool) and up_to > 0:
                self.stats.incr(f"{PREFIX}.claims.possibly_lost", up_to, tags=tags)

    # -- claims -----------------------------------------------------------------------------------------

    def store_call(self, op: str, seconds: float) -> None:
        """One round trip to the claims' store (``get``, ``set``, ``delete``, ``keys``): writes counted, timed."""
        if op in _WRITES:
            self.stats.incr(f"{PREFIX}.claims.writes", tags={"op": op})
            self.stats.timing(f"{PREFIX}.claims.write_duration", dt.timedelta(seconds=seconds), tags={"op": op})

    def open_claims(self, claims: Iterable[Mapping[str, Any]], steps: Iterable[Any] = (),
                    now: dt.datetime | None = None) -> dict[str, tuple[int, float]]:
        """Send gauges of the open claims per step, from ``ClaimsLedger.list_claims()``.

        How many, and the age in seconds of the oldest (since it was first claimed). ``steps`` always get a value (0
        when none is open).

        :return: ``{step: (open, oldest age)}``, as sent
        """
        now = now or dt.datetime.now(dt.UTC)
        per_step: dict[str, tuple[int, float]] = {str(s): (0, 0.0) for s in steps if s is not None}
        for claim in claims:
            if claim.get("state", "claimed") != "claimed" or claim.get("integration_step_id") is None:
                continue
            step = str(claim["integration_step_id"])
            since = parse_time(claim.get("first_claimed_at")) or parse_time(claim.get("claimed_at"))
            age = max((now - since).total_seconds(), 0.0) if since is not None else 0.0
            count, oldest = per_step.get(step, (0, 0.0))
            per_step[step] = (count + 1, max(oldest, age))
        for step, (count, oldest) in per_step.items():
            self.stats.gauge(f"{PREFIX}.claims.open{_step_suffix(step)}", count, tags={"step": step})
            self.stats.gauge(f"{PREFIX}.claims.oldest_age{_step_suffix(step)}", round(oldest, 3), tags={"step": step})
        return per_step

    def claims_after_drain(self, claims: Any, step: Any, reclaimed: int = 0) -> None:
        """Send the metrics of a finished drain of ``step``: reclaimed instances and the open-claims gauges.

        After a drain by the sensor, the batch worker or a trigger: the instances offered again, and the gauges
        of :meth:`open_claims` from ``claims`` (a ``ClaimsLedger``; one read of its records).
        Never raises: metrics never fail a task or a trigger.
        """
        try:
            self.reclaimed(step, reclaimed)
            self.open_claims(claims.list_claims(), steps=[step])
        except Exception as exc:
            log.warning("Could not send the claims metrics: %s", exc)


def recorder() -> StatsRecorder | None:
    """Return a recorder when Airflow sends metrics from this process, else ``None`` (nothing measured)."""
    return StatsRecorder() if metrics_enabled() else None


__all__ = ["PREFIX", "StatsRecorder", "recorder"]
