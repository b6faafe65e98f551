"""The shapes of the values the sensor, trigger and operators return (their XCom), in one place.

Every key here is a promise to DAG authors: a key is added, never renamed or removed without a deprecation.
Values are JSON-safe: datetimes as ISO 8601 UTC strings ending in ``Z``, decimals as exact strings.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class IntegrationInstance(TypedDict):
    """One integration instance, as the sensor returns it (a list of them) and the trigger's events carry."""

    IntegrationInstanceId: int
    ProcessInstanceId: int | None
    #: ``{label: value}`` with ``fetch_fields=True``
    fields: NotRequired[dict[str, Any]]
    #: present (``True``) when a claim of an earlier run is offered again
    reclaimed: NotRequired[bool]


class CompletionResult(TypedDict):
    """What ``WorkflowsoftCompleteStepOperator`` returns."""

    IntegrationInstanceId: int
    completed: bool
    #: the instance was completed by an earlier attempt of this task instance (or of a re-offered claim)
    already_completed: bool
    #: ``{label: value written}``
    fields: dict[str, Any]


class ProcessInstance(TypedDict):
    """What ``WorkflowsoftStartProcessOperator`` returns."""

    Id: int | str | None
    Title: str | None


class FailedInstance(TypedDict):
    """An instance the batch worker could not complete, with the error."""

    IntegrationInstanceId: int | str
    error: str


class BatchReport(TypedDict):
    """What the batch worker (``@task.workflowsoft_worker``, ``WorkflowsoftIntegrationWorkerOperator``) returns."""

    processed: int
    received: int
    succeeded: list[int | str]
    failed: list[FailedInstance]
    #: ``{str(instance id): {label: value written}}``
    results: dict[str, dict[str, Any]]
    #: given instances an earlier try of this task instance already completed
    skipped: list[int | str]
    seconds: float
    #: round trips to the records' store (Airflow Variables) during the run
    store_round_trips: int
    #: mean duration of one write of the claims record (the window a hard kill can lose an answer in)
    store_write_ms: float
    poll_error: NotRequired[str]
    notification: NotRequired[dict[str, Any]]


class ClaimRecord(TypedDict):
    """One entry of ``WorkflowsoftListClaimsOperator`` / ``WorkflowsoftReleaseClaimsOperator``."""

    integration_instance_id: int | str
    state: str  # "claimed" or "done"
    owner: str  # "<dag>/<run>/<task>/<map index>"
    integration_diagram_id: NotRequired[int | str | None]
    process_instance_id: NotRequired[int | None]
    claimed_at: NotRequired[str]
    first_claimed_at: NotRequired[str]
    offers: NotRequired[int]


__all__ = ["BatchReport", "ClaimRecord", "CompletionResult", "FailedInstance", "IntegrationInstance",
           "ProcessInstance"]
