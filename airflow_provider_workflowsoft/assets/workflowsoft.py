"""An integration step as an Airflow Asset: event-driven DAG runs, with no sensor task and no empty runs.

.. code-block:: python

    from airflow.sdk import dag, task
    from airflow_provider_workflowsoft.assets.workflowsoft import instances_from_events, integration_step_asset

    enrich_event = integration_step_asset(
        process_diagram_name="Event registration", integration_step_name="Enrich event",
        max_instances=50, poll_interval=10,
    )

    @dag(schedule=[enrich_event])
    def enrich_on_arrival():
        @task
        def received(triggering_asset_events=None):
            return instances_from_events(triggering_asset_events)
        ...

:func:`integration_step_asset` returns the step's Asset with an ``AssetWatcher`` whose trigger
(:class:`~airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationEventTrigger`) polls the
step in the triggerer and claims what it receives before it fires; each event becomes an asset event and
Airflow starts a run of every DAG scheduled on the Asset. One run may consume several events:
:func:`instances_from_events` returns the instances of all of them, in order, without duplicates, in the
shape the sensor returns. :func:`integration_step_asset` with ``watch=False`` is the same Asset without a
watcher, for ``inlets`` of DAGs that are not scheduled on it.

**Define the watched Asset once** (in your DAG file, or a module your DAG files import) and use that same object
wherever the step appears in a DAG that runs on it (``schedule``, ``inlets``): Airflow keeps one definition
per Asset, and every DAG file that uses the Asset without the watcher (a plain copy in ``inlets``, or a watcher
with other settings) replaces the watcher's definition when it is parsed, stopping or changing the watcher.
That is why the sensor and the operators take no implicit ``inlets``: pass them yourself.

Needs Airflow 3.1 or newer. On 3.3 the watcher keeps its claims record in the Asset's state store. On 3.1, which
has no such store and whose triggerer lists no Variables, the record is a Variable (same key) and each event names an
*ack slot* where the run that takes the event mirrors its claims (``"ack"`` in each instance): the watcher reads the
slots by key, with the same guarantees (docs/reliability.md).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.step import StepRef
from airflow_provider_workflowsoft.records.claims import DEFAULT_MAX_OFFERS
from airflow_provider_workflowsoft.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_1_PLUS,
    airflow_version,
    asset_classes,
)

#: The URI scheme of Workflowsoft Assets.
SCHEME = "workflowsoft"
#: The AssetWatcher's name on every integration-step Asset.
WATCHER_NAME = "workflowsoft_integration_step_watcher"


def integration_step_uri(
    integration_step_id: int | str | None = None,
    *,
    process_diagram_name: str | None = None,
    integration_step_name: str | None = None,
    workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
) -> str:
    """Return the stable URI (also the name) of an integration step's Asset.

    ``workflowsoft://<conn id>/integration-steps/<id>``, or ``workflowsoft://<conn id>/process-diagrams/<diagram
    name>/integration-steps/<step name>`` (names percent-encoded) when the step is given by name.
    """
    conn = _conn_id(workflowsoft_conn_id)
    step_id = StepRef(integration_step_id, process_diagram_name, integration_step_name).step_id()
    if step_id is not None:
        return f"{SCHEME}://{conn}/integration-steps/{step_id}"
    diagram = urllib.parse.quote(str(process_diagram_name).strip(), safe="")
    step = urllib.parse.quote(str(integration_step_name).strip(), safe="")
    return f"{SCHEME}://{conn}/process-diagrams/{diagram}/integration-steps/{step}"


def integration_step_asset(
    integration_step_id: int | str | None = None,
    *,
    process_diagram_name: str | None = None,
    integration_step_name: str | None = None,
    workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
    max_instances: int = 100,
    poll_interval: float = defaults.DEFAULT_POLL_INTERVAL_SECONDS,
    reclaim_after: dt.timedelta | float = dt.timedelta(hours=1),
    fetch_fields: bool = False,
    watch: bool = True,
    max_offers: int | None = DEFAULT_MAX_OFFERS,
) -> Any:
    """Return the Asset of an integration step, watched in the triggerer: put it in a DAG's ``schedule``.

    :param integration_step_id: the integration step (``IntegrationDiagramID`` in the API)
    :param process_diagram_name: with ``integration_step_name``, the step by name (looked up in the triggerer)
    :param integration_step_name: the integration step's title in that process diagram
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :param max_instances: the most instances one event (one asset event) carries
    :param poll_interval: seconds between polls when nothing is new; the time from an instance's creation
        to its run is at most about this plus Airflow's scheduling delay
    :param reclaim_after: the lease of the watcher's claims: an instance handed to a run that did not complete
        it within this time (the run failed, or the event was lost with a dying triggerer) is handed out again.
        It runs from the claim: make it longer than an event's wait for its run plus the run itself
    :param fetch_fields: read each instance's fields in the triggerer (``"fields"`` in each instance)
    :param max_offers: an instance handed out this many times without being completed (its runs failed) is
        parked: kept in the watcher's record and not handed out again until released (``None`` or ``0``: never)
    :param watch: ``False``: the same Asset without a watcher (for ``inlets`` where no DAG is scheduled on the
        step's watched Asset; works on every Airflow 3)
    :return: ``airflow.sdk.Asset`` named by its URI (see :func:`integration_step_uri`)
    :raises RuntimeError: on Airflow before 3.1 (with ``watch=True``; 3.0 with ``watch=False``), naming the version
        needed
    """
    uri = integration_step_uri(integration_step_id, process_diagram_name=process_diagram_name,
                               integration_step_name=integration_step_name, workflowsoft_conn_id=workflowsoft_conn_id)
    if not AIRFLOW_V_3_0_PLUS or (watch and not AIRFLOW_V_3_1_PLUS):
        raise RuntimeError(
            f"integration_step_asset({'watch=True' if watch else 'watch=False'}) needs Airflow "
            f"{'3.1' if watch else '3.0'} or newer; this is Airflow {airflow_version()}. Event-driven runs need "
            "asset watchers whose triggerer serves Variables to triggers (Airflow 3.1). On this "
            "Airflow, schedule the DAG and wait with WorkflowsoftIntegrationSensor (deferrable=True)."
        )
    Asset, AssetWatcher = asset_classes()
    plain = Asset(name=uri, uri=uri)  # Airflow normalises the URI: the watcher names the normalised one
    if not watch:
        return plain
    # Imported here: the triggers module imports this one (the step's URI).
    from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationEventTrigger

    step_id = StepRef(integration_step_id, process_diagram_name, integration_step_name).step_id()
    trigger = WorkflowsoftIntegrationEventTrigger(
        integration_step_id=step_id,
        process_diagram_name=None if step_id is not None else str(process_diagram_name).strip(),
        integration_step_name=None if step_id is not None else str(integration_step_name).strip(),
        workflowsoft_conn_id=workflowsoft_conn_id,
        max_instances=max_instances,
        poll_interval=poll_interval,
        reclaim_after=reclaim_after,
        fetch_fields=bool(fetch_fields),
        asset_uri=plain.uri,
        max_offers=max_offers,
    )
    return Asset(name=plain.uri, uri=plain.uri, watchers=[AssetWatcher(name=WATCHER_NAME, trigger=trigger)])


def instances_from_events(triggering_asset_events: Any, asset: Any = None) -> list[dict[str, Any]]:
    """Return the integration instances carried by a run's asset events, in the sensor's shape.

    One DAG run may consume several events (Airflow starts one run for every event since the previous
    run): all of them are read, oldest first, and an instance carried twice is returned once.

    :param triggering_asset_events: the run's ``triggering_asset_events`` (from the task context), or a
        list of asset events (objects with ``.extra``, or dicts with ``"extra"``)
    :param asset: only the events of this Asset (an Asset, or its URI); needed when the run consumed events of
        several integration steps (their instances go to different callables), else every event is read
    :return: ``[{"IntegrationInstanceId", "ProcessInstanceId", "fields"?, "reclaimed"?, "ack"?}, ...]``, ready for
        ``.expand(...)`` or the batch worker's ``instances`` (``"ack"``, Airflow 3.1: the slot where the run's claims
        tell the watcher what it took; an instance carried twice names its newest event's)
    """
    wanted = getattr(asset, "uri", asset)
    events: list[Any] = []
    if triggering_asset_events is None:
        return []
    if isinstance(triggering_asset_events, Mapping) or hasattr(triggering_asset_events, "keys"):
        for key in list(triggering_asset_events.keys()):
            if wanted is not None and getattr(key, "uri", key) != wanted:
                continue
            events.extend(triggering_asset_events[key])
    else:
        events.extend(triggering_asset_events)
    if all(_timestamp(e) is not None for e in events):
        events.sort(key=lambda e: _timestamp(e))  # type: ignore[arg-type,return-value]
    if wanted is None:
        uris = sorted({str(p["asset_uri"]) for p in map(_payload, events) if p.get("instances") and p.get("asset_uri")})
        if len(uris) > 1:
            raise WorkflowsoftInputError(
                f"This run consumed events of {len(uris)} Workflowsoft integration steps ({', '.join(uris)}): "
                "say which step's instances to take with instances_from_events(..., asset=<the step's Asset>)")
    out: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for event in events:
        payload = _payload(event)
        if wanted is not None and payload.get("asset_uri") not in (None, wanted):
            continue
        for instance in payload.get("instances") or []:
            if not isinstance(instance, Mapping) or "IntegrationInstanceId" not in instance:
                continue
            key = str(instance["IntegrationInstanceId"])
            if key in seen:
                if instance.get("ack"):  # handed out again: the watcher now reads the newest event's slot
                    seen[key]["ack"] = instance["ack"]
                continue
            seen[key] = dict(instance)
            out.append(seen[key])
    return out


# -- helpers --------------------------------------------------------------------------------------------


def _payload(event: Any) -> dict[str, Any]:
    extra = event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)
    if not isinstance(extra, Mapping):
        return {}
    payload = extra.get("payload", extra)
    return dict(payload) if isinstance(payload, Mapping) else {}


def _timestamp(event: Any) -> Any:
    return event.get("timestamp") if isinstance(event, Mapping) else getattr(event, "timestamp", None)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _conn_id(conn_id: Any) -> str:
    if not _text(conn_id) or any(c in str(conn_id) for c in "/?#@: "):
        raise WorkflowsoftInputError(
            f"workflowsoft_conn_id must be an Airflow connection id (no '/', '?', '#', '@', ':' or spaces), "
            f"got {conn_id!r}"
        )
    return str(conn_id).strip()


__all__ = ["SCHEME", "instances_from_events", "integration_step_asset", "integration_step_uri"]
