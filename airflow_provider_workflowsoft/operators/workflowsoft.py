"""Operators for Workflowsoft integration instances, processes, tasks and the claims ledger.

All operators are thin: they coerce their inputs, build a
:class:`~airflow_provider_workflowsoft.hooks.workflowsoft.WorkflowsoftHook` and call it. Their return
values (XCom) are small and JSON-safe. ``integration_instance_id`` accepts an int, a numeric string or
an instance dict from :class:`~airflow_provider_workflowsoft.sensors.workflowsoft.WorkflowsoftIntegrationSensor`,
so ``.partial(...).expand(integration_instance_id=sensor.output)`` works as it is.

The ledgers (:mod:`airflow_provider_workflowsoft.ledger`) live in Airflow Variables by default; set the
``ledger_store`` argument (or class attribute) to another store, such as ``ledger.MemoryStore()`` in tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults, ledger
from airflow_provider_workflowsoft._compat import BaseOperator, Context
from airflow_provider_workflowsoft.errors import WorkflowsoftAPIError, WorkflowsoftInputError
from airflow_provider_workflowsoft.fields import empty_required, prepare_update, required_error, to_jsonable
from airflow_provider_workflowsoft.protocol import looks_already_completed
from airflow_provider_workflowsoft.task_mixin import WorkflowsoftTaskMixin


def coerce_instance_id(value: Any) -> int:
    """An integration instance id from an int, a numeric string, an instance dict (or its JSON text)."""
    original = value
    if isinstance(value, str) and value.strip().startswith("{"):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, Mapping):
        for key in ("IntegrationInstanceId", "integration_instance_id", "integrationInstanceId"):
            if key in value:
                value = value[key]
                break
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WorkflowsoftInputError(
            "integration_instance_id must be an integer id, a numeric string or an instance dict with "
            f"'IntegrationInstanceId', got {original!r}"
        )
    return value


def _coerce_fields(value: Any, name: str = "fields") -> dict[str, Any] | None:
    """``None``, a mapping, or the JSON text of one (a template renders to text)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise WorkflowsoftInputError(f"{name} must be a mapping of field -> value, got {value!r}") from None
    if not isinstance(value, Mapping):
        raise WorkflowsoftInputError(f"{name} must be a mapping of field -> value, got {value!r}")
    return dict(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class _WorkflowsoftOperator(WorkflowsoftTaskMixin, BaseOperator):
    """Shared plumbing: the hook and the ledgers' store (see :class:`WorkflowsoftTaskMixin`)."""

    ui_color = "#e8f0ff"

    def __init__(self, *, workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID, ledger_store: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflowsoft_conn_id = workflowsoft_conn_id
        self._set_ledger_store(ledger_store)

    def _user(self, user: Any) -> int | str | None:
        return None if _blank(user) else self.hook.resolve_user_id(user)


class WorkflowsoftGetFieldsOperator(_WorkflowsoftOperator):
    """Reads the fields of an integration instance; returns ``{label: value}`` (JSON-safe: datetimes
    as ISO strings ending in ``Z``, decimals as exact strings).

    .. code-block:: python

        WorkflowsoftGetFieldsOperator.partial(task_id="read").expand(integration_instance_id=sensor.output)

    :param integration_instance_id: an int, a numeric string or an instance dict from the sensor
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = ("integration_instance_id", "workflowsoft_conn_id")

    def __init__(self, *, integration_instance_id: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_instance_id = integration_instance_id

    def execute(self, context: Context) -> dict[str, Any]:
        iid = coerce_instance_id(self.integration_instance_id)
        return to_jsonable(self.hook.get_field_values(iid))  # type: ignore[no-any-return]


class WorkflowsoftUpdateFieldsOperator(_WorkflowsoftOperator):
    """Validates then writes field values of an integration instance (all or nothing); returns
    ``{label: value written}``.

    .. code-block:: python

        WorkflowsoftUpdateFieldsOperator(
            task_id="mark", integration_instance_id="{{ ti.xcom_pull('new_events')[0]['IntegrationInstanceId'] }}",
            fields={"Event exists": True, "Attendees": 120},
        )

    :param integration_instance_id: an int, a numeric string or an instance dict from the sensor
    :param fields: field label (or key, or ``field_<key>``) -> value
    :param on_behalf_of: ``X-OnBehalfOf-Id`` of the update (default: the connection's)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = ("integration_instance_id", "fields", "on_behalf_of", "workflowsoft_conn_id")

    def __init__(self, *, integration_instance_id: Any, fields: Any, on_behalf_of: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_instance_id = integration_instance_id
        self.fields = fields
        self.on_behalf_of = on_behalf_of

    def execute(self, context: Context) -> dict[str, Any]:
        iid = coerce_instance_id(self.integration_instance_id)
        values = _coerce_fields(self.fields) or {}
        obo = None if _blank(self.on_behalf_of) else str(self.on_behalf_of)
        return self.hook.update_fields(iid, values, on_behalf_of=obo)


class WorkflowsoftCompleteStepOperator(_WorkflowsoftOperator):
    """Writes field values (optional) and completes an integration instance.

    One GET reads the fields; every value and every required field is checked before anything is
    written, so an instance is never left half-written. The claims ledger records the completion
    (*completing* before sending, *done* after): a retry after a lost answer, or of an instance the
    ledger already knows as done, takes Workflowsoft's "already completed" as success.

    .. code-block:: python

        WorkflowsoftCompleteStepOperator.partial(task_id="complete").expand_kwargs(
            compute_values.output  # [{"integration_instance_id": 5001, "fields": {"Venue code": "HALL-A"}}, ...]
        )

    :param integration_instance_id: an int, a numeric string or an instance dict from the sensor
    :param fields: field label (or key, or ``field_<key>``) -> value to write before completing
    :param on_behalf_of: ``X-OnBehalfOf-Id`` of the write and the completion (default: the connection's)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: ``{"IntegrationInstanceId", "completed", "already_completed", "fields": {label: written}}``
    """

    template_fields: Sequence[str] = ("integration_instance_id", "fields", "on_behalf_of", "workflowsoft_conn_id")

    def __init__(self, *, integration_instance_id: Any, fields: Any = None, on_behalf_of: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_instance_id = integration_instance_id
        self.fields = fields
        self.on_behalf_of = on_behalf_of

    def execute(self, context: Context) -> dict[str, Any]:
        iid = coerce_instance_id(self.integration_instance_id)
        values = _coerce_fields(self.fields) or {}
        obo = None if _blank(self.on_behalf_of) else str(self.on_behalf_of)
        claims = self.claims
        state = claims.state(iid)
        if state == ledger.DONE:
            # Completed by an earlier try: confirm with the server, send nothing else.
            result = self.hook.complete_step(iid, validate=False, on_behalf_of=obo, already_completed_ok=True)
            self.log.info("Integration instance %s was already done in the ledger; server confirms", iid)
            recorded = (claims.get(iid) or {}).get("result") or {}
            return {**recorded, **result}
        fields = self.hook.get_fields(iid)
        # Validate values and required fields before any write (raises, nothing sent).
        wire = prepare_update(fields, values, instance_id=iid)
        missing = empty_required(fields, wire)
        if missing:
            raise required_error(iid, missing)
        already_ok = state == ledger.COMPLETING
        claims.mark_completing(iid)
        try:
            result = self.hook.update_and_complete(
                iid, values, fields=fields, on_behalf_of=obo, already_completed_ok=already_ok
            )
        except WorkflowsoftAPIError as exc:
            if not (already_ok and looks_already_completed(exc.status, exc.server_message)):
                raise
            # The earlier try's completion went through; the write was refused because of it.
            result = self.hook.complete_step(iid, validate=False, on_behalf_of=obo, already_completed_ok=True)
        result = to_jsonable(result)
        claims.mark_done(iid, result)
        self.log.info("Completed integration instance %s%s", iid,
                      " (it was already completed)" if result.get("already_completed") else "")
        return result  # type: ignore[no-any-return]


class WorkflowsoftStartProcessOperator(_WorkflowsoftOperator):
    """Starts a process; returns ``{"Id", "Title"}`` of the process instance.

    The start is sent at most once per task instance (dag, run, task, map index): a retry after a
    success returns the recorded result, a retry after a lost answer fails clearly instead of starting
    a duplicate (unless ``allow_duplicates``).

    .. code-block:: python

        WorkflowsoftStartProcessOperator(
            task_id="start", process_diagram_name="Customer follow-up", on_behalf_of="john.doe@example.com",
            fields={"Customer": "ACME Corp"},
        )

    :param process_diagram_id: the process diagram (``ProcessDiagramID``)
    :param process_diagram_name: or its title, resolved at run time
    :param on_behalf_of: the user starting it: a user id, an email or a full name
    :param fields: process fields (uuid keys become ``field_<key>``)
    :param allow_duplicates: send even when an earlier try's outcome is unknown
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = (
        "process_diagram_id", "process_diagram_name", "on_behalf_of", "fields", "allow_duplicates",
        "workflowsoft_conn_id",
    )

    def __init__(self, *, process_diagram_id: Any = None, process_diagram_name: str | None = None,
                 on_behalf_of: Any = None, fields: Any = None, allow_duplicates: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if _blank(process_diagram_id) and _blank(process_diagram_name):
            raise WorkflowsoftInputError("WorkflowsoftStartProcessOperator needs process_diagram_id or "
                                         "process_diagram_name")
        self.process_diagram_id = process_diagram_id
        self.process_diagram_name = process_diagram_name
        self.on_behalf_of = on_behalf_of
        self.fields = fields
        self.allow_duplicates = allow_duplicates

    def execute(self, context: Context) -> dict[str, Any]:
        fields = _coerce_fields(self.fields)
        if not _blank(self.process_diagram_id):
            pid: Any = self.process_diagram_id
            what = f"a process of diagram {pid}"
        else:
            diagram = self.hook.find_process_diagram(str(self.process_diagram_name))
            pid = diagram["Id"]
            what = f"a process of {diagram.get('Title')!r} (diagram {pid})"
        user = self._user(self.on_behalf_of)
        result = self.creates.run_once(
            ledger.key_from_context(context),
            lambda: self.hook.start_process(pid, fields=fields, on_behalf_of=user),
            what=what,
            allow_duplicates=_truthy(self.allow_duplicates),
        )
        return {"Id": result.get("Id"), "Title": result.get("Title")}


class WorkflowsoftCreateTaskOperator(_WorkflowsoftOperator):
    """Creates a Workflowsoft task; returns the task object (``Id``, ``Title``, ``Description``).

    Sent at most once per task instance, like :class:`WorkflowsoftStartProcessOperator`.

    .. code-block:: python

        WorkflowsoftCreateTaskOperator(
            task_id="follow_up", title="Call new customers", assignee="ops@example.com",
            on_behalf_of="john.doe@example.com",
        )

    :param title: the task's title
    :param description: its description
    :param assignee: the user it is assigned to: a user id, an email or a full name (default: the
        ``on_behalf_of`` user)
    :param on_behalf_of: the user creating it: a user id, an email or a full name
    :param files: files attached to the task, as the API takes them
    :param allow_duplicates: send even when an earlier try's outcome is unknown
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = (
        "title", "description", "assignee", "on_behalf_of", "files", "allow_duplicates", "workflowsoft_conn_id",
    )

    def __init__(self, *, title: str, description: str | None = None, assignee: Any = None,
                 on_behalf_of: Any = None, files: list[Any] | None = None, allow_duplicates: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.description = description
        self.assignee = assignee
        self.on_behalf_of = on_behalf_of
        self.files = files
        self.allow_duplicates = allow_duplicates

    def execute(self, context: Context) -> dict[str, Any]:
        assignee = self._user(self.assignee)
        user = self._user(self.on_behalf_of)
        return self.creates.run_once(
            ledger.key_from_context(context),
            lambda: self.hook.create_task(self.title, assigned_user_id=assignee, description=self.description,
                                          files=self.files, on_behalf_of=user),
            what=f"the task {self.title!r}",
            allow_duplicates=_truthy(self.allow_duplicates),
        )


class WorkflowsoftClaimsOperator(_WorkflowsoftOperator):
    """Lists or releases claims of the claims ledger (instances received but not completed).

    A released instance is forgotten: it will not be re-offered by the sensor.

    .. code-block:: python

        WorkflowsoftClaimsOperator(task_id="stuck", action="list", integration_diagram_id=11)
        WorkflowsoftClaimsOperator(task_id="release", action="release", instance_ids=[5001, 5002])

    :param action: ``"list"`` or ``"release"``
    :param integration_diagram_id: list only this integration step's claims (default: every step)
    :param instance_ids: the instances to release (ids or instance dicts)
    :param include_done: list also claims already completed
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: the claim records listed or released
    """

    template_fields: Sequence[str] = (
        "action", "integration_diagram_id", "instance_ids", "include_done", "workflowsoft_conn_id",
    )

    def __init__(self, *, action: str = "list", integration_diagram_id: Any = None, instance_ids: Any = None,
                 include_done: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.integration_diagram_id = integration_diagram_id
        self.instance_ids = instance_ids
        self.include_done = include_done

    def execute(self, context: Context) -> list[dict[str, Any]]:
        action = str(self.action).strip().lower()
        claims = self.claims
        step = None if _blank(self.integration_diagram_id) else self.integration_diagram_id
        if isinstance(step, str) and step.strip().isdigit():
            step = int(step.strip())
        if action == "list":
            records = claims.list_claims(step, include_done=_truthy(self.include_done))
            self.log.info("%d claim(s): %s", len(records), [r.get("integration_instance_id") for r in records])
            return records
        if action == "release":
            ids = self.instance_ids
            if isinstance(ids, str):
                ids = json.loads(ids) if ids.strip().startswith("[") else [i for i in ids.split(",") if i.strip()]
            if ids is None or isinstance(ids, int | Mapping):
                ids = [] if ids is None else [ids]
            wanted = [coerce_instance_id(i) for i in ids]
            if not wanted:
                raise WorkflowsoftInputError("action 'release' needs instance_ids (see action 'list')")
            records = [r for r in (claims.get(i) for i in wanted) if r]
            released = set(claims.release(wanted))
            records = [r for r in records if r.get("integration_instance_id") in released]
            self.log.info("Released %d claim(s): %s", len(records), sorted(released))
            return records
        raise WorkflowsoftInputError(f"action must be 'list' or 'release', got {self.action!r}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


__all__ = [
    "WorkflowsoftClaimsOperator",
    "WorkflowsoftCompleteStepOperator",
    "WorkflowsoftCreateTaskOperator",
    "WorkflowsoftGetFieldsOperator",
    "WorkflowsoftStartProcessOperator",
    "WorkflowsoftUpdateFieldsOperator",
    "coerce_instance_id",
]



def __getattr__(name: str) -> Any:
    # The batch operator lives in its own module; it is re-exported here, loaded on first use only.
    if name == "WorkflowsoftProcessInstancesOperator":
        from airflow_provider_workflowsoft.operators.batch import WorkflowsoftProcessInstancesOperator

        return WorkflowsoftProcessInstancesOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
