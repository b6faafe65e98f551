"""Enrich new "Event registration" processes in Workflowsoft.

Waits (deferrable) for new instances of the integration step "Enrich event", computes the venue, the
duration and the expected attendees of each event from ``data/venues.csv`` (by event name, else by
category), and writes them back while completing each instance.

Each instance has its own ``compute`` and ``complete`` (a mapped task group), so one failing instance never
stops the completion of the others: an instance without an event name fails alone, stays claimed and is
offered again to a run after the sensor's ``reclaim_after``. The run is then failed, and the other
instances are completed.
"""

from __future__ import annotations

import csv
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task, task_group

from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

VENUES_CSV = Path(__file__).parent / "data" / "venues.csv"
POKE_INTERVAL = float(os.environ.get("WORKFLOWSOFT_POKE_INTERVAL", "30"))


def load_venues(path: Path = VENUES_CSV) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(rows by event name, default rows by category); names compared case-insensitively."""
    by_name: dict[str, dict[str, str]] = {}
    by_category: dict[str, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["event_name"].strip() == "*":
                by_category[row["category"].strip().casefold()] = row
            else:
                by_name[row["event_name"].strip().casefold()] = row
    return by_name, by_category


def enrich(instance: dict[str, Any], venues: tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]) -> dict:
    """Keyword arguments of one completion: the instance and the values computed for it.

    An instance without an event name cannot be looked up: it fails (alone), naming the instance."""
    by_name, by_category = venues
    fields = instance.get("fields") or {}
    name = str(fields.get("Event name") or "").strip()
    if not name:
        raise ValueError(f"Integration instance {instance['IntegrationInstanceId']} has no 'Event name' to look up")
    category = str(fields.get("Category") or "Conference").strip()
    row = by_name.get(name.casefold()) or by_category.get(category.casefold()) or by_category["conference"]
    values: dict[str, Any] = {
        "Venue code": row["venue_code"],
        "Event duration": str(Decimal(row["duration_hours"])),
        "Attendees": int(row["attendees"]),
        "Event exists": name.casefold() in by_name,
    }
    if row["category"] and not fields.get("Category"):
        values["Category"] = row["category"]
    return {"integration_instance_id": instance["IntegrationInstanceId"], "fields": values}


@dag(
    dag_id="workflowsoft_enrich_events",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["workflowsoft", "example"],
    doc_md=__doc__,
)
def workflowsoft_enrich_events() -> None:
    new_events = WorkflowsoftIntegrationSensor(
        task_id="new_events",
        process_diagram_name="Event registration",
        integration_step_name="Enrich event",
        fetch_fields=True,
        max_instances=10,
        deferrable=True,
        poke_interval=POKE_INTERVAL,
        timeout=6 * 60 * 60,
    )

    @task
    def compute(instance: dict[str, Any]) -> dict[str, Any]:
        return enrich(instance, load_venues())["fields"]  # type: ignore[no-any-return]

    @task_group
    def enrich_event(instance: dict[str, Any]) -> None:
        # One compute -> complete pair per instance: a failing one stops only its own instance's completion.
        WorkflowsoftCompleteStepOperator(
            task_id="complete", integration_instance_id=instance, fields=compute(instance), retries=2
        )

    enrich_event.expand(instance=new_events.output)


workflowsoft_enrich_events()
