"""Operators for Workflowsoft integration instances, processes, tasks and the claims.

All operators are thin: they coerce their inputs, build a
:class:`~airflow_provider_workflowsoft.hooks.workflowsoft.WorkflowsoftHook` and call it. Their return
values (XCom) are small and JSON-safe. ``integration_instance_id`` accepts an int, a numeric string or
an instance dict from :class:`~airflow_provider_workflowsoft.sensors.workflowsoft.WorkflowsoftIntegrationSensor`,
so ``.partial(...).expand(integration_instance_id=sensor.output)`` works as it is.

The records (:mod:`airflow_provider_workflowsoft.records`) live in Airflow Variables (claims) and, on
Airflow 3.3+, in the task instance's ``task_state_store`` (create records).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import to_jsonable
from airflow_provider_workflowsoft.api.protocol import (
    blank,
    coerce_id,
    coerce_instance_id,
    given_instances,
    id_value,
    to_bool,
)
from airflow_provider_workflowsoft.assets.workflowsoft import SCHEME
from airflow_provider_workflowsoft.deprecation import warn_deprecated
from airflow_provider_workflowsoft.lineage import completion_lineage, step_paths
from airflow_provider_workflowsoft.operators import batch
from airflow_provider_workflowsoft.operators._base import WorkflowsoftTaskMixin, fails_without_retries
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import (
    ACTIONS,
    DONE,
    FORGET,
    PARK,
    PARKED,
    RELEASE,
    read_record,
)
from airflow_provider_workflowsoft.version_compat import BaseOperator, Context


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


class _WorkflowsoftOperator(WorkflowsoftTaskMixin, BaseOperator):
    """Shared plumbing: the hook and the ledgers' store (see :class:`WorkflowsoftTaskMixin`)."""

    ui_color = "#e8f0ff"

    def __init__(self, *, workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID, **kwargs: Any) -> None:
        self._take_ledger_store(kwargs)
        super().__init__(**kwargs)
        self.workflowsoft_conn_id = workflowsoft_conn_id


class WorkflowsoftGetFieldsOperator(_WorkflowsoftOperator):
    """Reads the fields of an integration instance.

    Returns ``{label: value}`` (JSON-safe: datetimes as ISO strings ending in ``Z``, decimals as exact strings).

    .. code-block:: python

        WorkflowsoftGetFieldsOperator.partial(task_id="read").expand(integration_instance_id=sensor.output)

    :param integration_instance_id: an int, a numeric string or an instance dict from the sensor
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = ("integration_instance_id", "workflowsoft_conn_id")

    def __init__(self, *, integration_instance_id: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_instance_id = integration_instance_id

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        iid = coerce_instance_id(self.integration_instance_id)
        return to_jsonable(self.hook.client.get_field_values(iid))  # type: ignore[no-any-return]


class _InstanceValuesOperator(_WorkflowsoftOperator):
    """An operator that writes values to one integration instance: its arguments and their coercion."""

    template_fields: Sequence[str] = ("integration_instance_id", "fields", "on_behalf_of", "workflowsoft_conn_id")

    def __init__(self, *, integration_instance_id: Any, fields: Any = None, on_behalf_of: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_instance_id = integration_instance_id
        self.fields = fields
        self.on_behalf_of = on_behalf_of

    def _inputs(self) -> tuple[int, dict[str, Any], str | None]:
        """(instance id, values to write, on-behalf-of or None for the connection's), checked."""
        obo = None if blank(self.on_behalf_of) else str(self.on_behalf_of)
        return coerce_instance_id(self.integration_instance_id), _coerce_fields(self.fields) or {}, obo


class WorkflowsoftUpdateFieldsOperator(_InstanceValuesOperator):
    """Validates then writes field values of an integration instance (all or nothing).

    Returns ``{label: value written}``.

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

    def __init__(self, *, integration_instance_id: Any, fields: Any, on_behalf_of: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(integration_instance_id=integration_instance_id, fields=fields, on_behalf_of=on_behalf_of,
                         **kwargs)

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        iid, values, obo = self._inputs()
        return self.hook.client.update_fields(iid, values, on_behalf_of=obo)


class WorkflowsoftCompleteStepOperator(_InstanceValuesOperator):
    """Writes field values (optional) and completes an integration instance.

    One GET reads the fields; every value and every required field is checked before anything is
    written, so an instance is never left half-written. "Already completed" counts as success when an
    earlier attempt of this package may have done it: a lost answer, a retry of this task, a re-offered claim
    (``"reclaimed": True`` in the instance dict), or this task instance's own done mark. After completing,
    one done mark is written, so that the sensor's claim of the instance is resolved.

    One per instance, after that instance's own computation (a mapped task group), so that one failing
    instance never stops the completion of the others:

    .. code-block:: python

        @task_group
        def enrich(instance):
            WorkflowsoftCompleteStepOperator(
                task_id="complete", integration_instance_id=instance, fields=compute(instance)
            )

        enrich.expand(instance=sensor.output)

    (``.partial(task_id="complete").expand_kwargs(compute.expand(...))`` works too, but there one failing
    ``compute`` leaves every completion ``upstream_failed``.)

    :param integration_instance_id: an int, a numeric string or an instance dict from the sensor
    :param fields: field label (or key, or ``field_<key>``) -> value to write before completing
    :param on_behalf_of: ``X-OnBehalfOf-Id`` of the write and the completion (default: the connection's)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: ``{"IntegrationInstanceId", "completed", "already_completed", "fields": {label: written}}``
    """

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        iid, values, obo = self._inputs()
        claims = self.claims_for(context)
        client = self.hook.client
        if claims.own_state(iid) == DONE:
            # Completed by an earlier try of this task instance: confirm with the server, send nothing else.
            result = client.complete_step(iid, validate=False, on_behalf_of=obo, already_completed_ok=True)
            self.log.info("Integration instance %s was completed by an earlier try; the server confirms", iid)
            return {**result, "fields": {}}
        # "Already completed" is an earlier attempt's success when this is a retry, or when the instance
        # is a claim offered again (its earlier holder may have completed it before dying).
        given = self.integration_instance_id
        reoffered = isinstance(given, Mapping) and bool(given.get("reclaimed"))
        already_ok = naming.try_number(context) > 1 or reoffered
        result = to_jsonable(client.update_and_complete(iid, values, on_behalf_of=obo, already_completed_ok=already_ok))
        self._lineage = {"fields": sorted(result.get("fields") or {}), "completed": 1}
        claims.mark_done([iid], write=False, ack=given.get("ack") if isinstance(given, Mapping) else None)
        claims.close()  # one write: the done mark, read by whoever holds the claim (an event's ack slot too)
        self.log.info("Completed integration instance %s%s", iid,
                      " (it was already completed)" if result.get("already_completed") else "")
        return result  # type: ignore[no-any-return]


    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Return OpenLineage's facets: the fields written to the step given as a Workflowsoft Asset in ``inlets``.

        For example ``inlets=[integration_step_asset(11, watch=False)]``.
        """
        done = getattr(self, "_lineage", None)
        steps = step_paths(self.inlets)
        if not done or not steps:
            return None
        return completion_lineage(self.hook.client.config.base_url, steps, done["fields"], done["completed"])


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
    :param on_behalf_of: the user starting it: a user id, an email or a full name (default: the connection's
        ``on_behalf_of`` when that is a user; ``system`` is refused before sending)
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
        if blank(process_diagram_id) and blank(process_diagram_name):
            raise WorkflowsoftInputError("WorkflowsoftStartProcessOperator needs process_diagram_id or "
                                         "process_diagram_name")
        self.process_diagram_id = process_diagram_id
        self.process_diagram_name = process_diagram_name
        self.on_behalf_of = on_behalf_of
        self.fields = fields
        self.allow_duplicates = allow_duplicates

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        fields = _coerce_fields(self.fields)
        # Checked (and looked up) before anything is recorded or sent: a start needs a user.
        user = self.hook.client.resolve_on_behalf_of(self.on_behalf_of, needs_user="Starting a process")
        if not blank(self.process_diagram_id):
            pid: Any = self.process_diagram_id
            what = f"a process of diagram {pid}"
        else:
            diagram = self.hook.client.find_process_diagram(str(self.process_diagram_name))
            pid = diagram["Id"]
            what = f"a process of {diagram.get('Title')!r} (diagram {pid})"
        client = self.hook.client
        result = self.run_create_once(
            context,
            lambda: client.start_process(pid, fields=fields, on_behalf_of=user),
            what=what,
            allow_duplicates=to_bool(self.allow_duplicates),
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
    :param on_behalf_of: the user creating it: a user id, an email or a full name (default: the connection's
        ``on_behalf_of`` when that is a user; ``system`` is refused before sending)
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

    @fails_without_retries
    def execute(self, context: Context) -> dict[str, Any]:
        client = self.hook.client
        # Checked (and looked up) before anything is recorded or sent: a task is created by a user, and is for
        # its assignee, else for its creator (the client's one rule, as for the notifier).
        assignee, user = client.task_people(self.assignee, self.on_behalf_of)

        def send() -> dict[str, Any]:
            return client.create_task(self.title, assigned_user_id=assignee, description=self.description,
                                      files=self.files, on_behalf_of=user)

        return self.run_create_once(
            context,
            send,
            what=f"the task {self.title!r}",
            allow_duplicates=to_bool(self.allow_duplicates),
        )


def _instance_ids(value: Any) -> list[int]:
    """Instance ids from a list of ids or instance dicts, a comma-separated string or JSON text (``instance_ids``)."""
    return [iid for iid, _ in given_instances(value, "instance_ids")]


class _ClaimsOperator(_WorkflowsoftOperator):
    """Listing, releasing, parking and forgetting claims, shared by the claims operators.

    Besides the records in Variables, they reach the claims of the asset watchers of the step Assets given in
    ``inlets`` (Airflow 3.3: the task reads those Assets' state stores; a watcher's record is changed through
    a command the watcher applies at its next round).
    """

    def _watchers(self, context: Context) -> dict[str, dict[str, Any]]:
        """Return the claims records of the watchers of this task's Workflowsoft inlets (key -> record)."""
        accessors = context.get("asset_state_store") if hasattr(context, "get") else None
        out: dict[str, dict[str, Any]] = {}
        if accessors is None:
            return out
        for asset in getattr(self, "inlets", None) or []:
            uri = getattr(asset, "uri", None)
            if not (isinstance(uri, str) and uri.startswith(SCHEME + "://")):
                continue
            key = naming.claims_key(self.workflowsoft_conn_id, naming.watcher_owner(uri))
            try:
                raw = accessors[asset].get(key, None)
            except Exception as exc:  # the Variables' claims are still listed
                self.log.warning("Could not read the asset watcher's claims of %s: %s", uri, exc)
                continue
            if isinstance(raw, dict):
                out[key] = {**read_record(raw), "asset_uri": uri}
        return out

    def _list(self, context: Context, step: Any, include_done: Any) -> list[dict[str, Any]]:
        claims = self.claims_for(context)
        watchers = self._watchers(context)
        records = claims.list_claims(None if blank(step) else id_value(step), include_done=to_bool(include_done),
                                     records={**claims.read_all(), **watchers})
        for record in records:
            if record["record"] in watchers:
                record["asset_uri"] = watchers[record["record"]]["asset_uri"]
        parked = [r["integration_instance_id"] for r in records if r["state"] == PARKED]
        self.log.info("%d claim(s): %s%s", len(records), [r.get("integration_instance_id") for r in records],
                      f"; parked: {parked}" if parked else "")
        return records

    def _decide(self, context: Context, action: str, instance_ids: Any) -> list[dict[str, Any]]:
        """Release (put back), park or forget instances by id, wherever they are claimed.

        That is in Variables, and in the watchers of this task's inlets. Returns their entries as they were.
        """
        wanted = _instance_ids(instance_ids)
        if not wanted:
            raise WorkflowsoftInputError(f"instance_ids names no instance to {action}, got {instance_ids!r}")
        claims = self.claims_for(context)
        watchers = self._watchers(context)
        held = {r["integration_instance_id"]: r
                for r in claims.list_claims(records={**claims.read_all(), **watchers})}
        in_variables, asked = claims.act(action, wanted, watchers)
        found = set(in_variables) | {coerce_id(i) for ids in asked.values() for i in ids}
        records = [held[i] for i in wanted if i in found and i in held]
        missing = [i for i in wanted if i not in found]
        done = {RELEASE: "Put back (offered again by the next drain)", PARK: "Parked", FORGET: "Forgot"}[action]
        self.log.info("%s %d instance(s): %s%s%s", done, len(found), sorted(found, key=str),
                      "".join(f"; asked of the asset watcher of {watchers[k]['asset_uri']}: {ids} (applied at its "
                              "next round)" for k, ids in asked.items()),
                      f"; not claimed in the Variables nor by the watchers of this task's inlets: {missing}"
                      if missing else "")
        return records

    def _release(self, context: Context, instance_ids: Any, forget: Any = False) -> list[dict[str, Any]]:
        return self._decide(context, FORGET if to_bool(forget) else RELEASE, instance_ids)


class WorkflowsoftListClaimsOperator(_ClaimsOperator):
    """Lists claims: integration instances a run received and has not completed (yet), and parked ones.

    .. code-block:: python

        WorkflowsoftListClaimsOperator(task_id="stuck", integration_step_id=11)

    The same records are Airflow Variables named ``workflowsoft.claims.<conn id>.*`` (one per task instance
    that holds claims): ``airflow variables list`` shows them; ``workflowsoft-claims list`` shows them with the
    asset watchers' claims.

    :param integration_step_id: only this integration step's claims (default: every step;
        ``integration_diagram_id``, its 0.1 name, still works)
    :param include_done: list also instances marked done
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: ``[{"integration_instance_id", "state", "owner", "integration_step_id", "claimed_at", "offers",
        "record", ...}]``; ``state`` is ``"claimed"``, ``"parked"`` (with ``parked_at``, ``reason``) or ``"done"``
    """

    template_fields: Sequence[str] = ("integration_step_id", "include_done", "workflowsoft_conn_id")

    def __init__(self, *, integration_step_id: Any = None, include_done: bool = False,
                 integration_diagram_id: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.integration_step_id = self._step_argument(integration_step_id, integration_diagram_id)
        self.include_done = include_done

    @fails_without_retries
    def execute(self, context: Context) -> list[dict[str, Any]]:
        return self._list(context, self.integration_step_id, self.include_done)


class WorkflowsoftReleaseClaimsOperator(_ClaimsOperator):
    """Releases claims: puts the instances back.

    So that the next drain of their step (sensor, batch worker) offers them again at once, whatever the lease, with
    their offers counted from 0. Parked instances are released the same way. ``forget=True`` drops them instead: they
    are not offered again (on a server that hands instances out once they are then lost to Airflow: handle them in
    Workflowsoft).

    .. code-block:: python

        WorkflowsoftReleaseClaimsOperator(task_id="release", instance_ids=[5001, 5002])
        WorkflowsoftReleaseClaimsOperator(task_id="forget", instance_ids=[5003], forget=True)

    :param instance_ids: the instances (ids or instance dicts, or a comma-separated string)
    :param forget: drop the claims instead of putting them back (0.3's behaviour of this operator)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: the claims released, as they were
    """

    template_fields: Sequence[str] = ("instance_ids", "forget", "workflowsoft_conn_id")

    def __init__(self, *, instance_ids: Any, forget: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance_ids = instance_ids
        self.forget = forget

    @fails_without_retries
    def execute(self, context: Context) -> list[dict[str, Any]]:
        return self._release(context, self.instance_ids, self.forget)


class WorkflowsoftParkClaimsOperator(_ClaimsOperator):
    """Parks claimed instances by hand.

    They are not offered again until released (:class:`WorkflowsoftReleaseClaimsOperator`).

    .. code-block:: python

        WorkflowsoftParkClaimsOperator(task_id="park", instance_ids=[5001])

    :param instance_ids: the instances (ids or instance dicts, or a comma-separated string)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :return: the claims parked, as they were
    """

    template_fields: Sequence[str] = ("instance_ids", "workflowsoft_conn_id")

    def __init__(self, *, instance_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance_ids = instance_ids

    @fails_without_retries
    def execute(self, context: Context) -> list[dict[str, Any]]:
        return self._decide(context, PARK, self.instance_ids)


class WorkflowsoftClaimsOperator(_ClaimsOperator):
    """Deprecated: use the list, release or park claims operator.

    :class:`WorkflowsoftListClaimsOperator`, :class:`WorkflowsoftReleaseClaimsOperator` or
    :class:`WorkflowsoftParkClaimsOperator`.

    :param action: ``"list"``, ``"release"`` (puts back), ``"park"`` or ``"forget"``
    """

    template_fields: Sequence[str] = (
        "action", "integration_diagram_id", "instance_ids", "include_done", "workflowsoft_conn_id",
    )

    def __init__(self, *, action: str = "list", integration_diagram_id: Any = None, instance_ids: Any = None,
                 include_done: bool = False, **kwargs: Any) -> None:
        warn_deprecated("WorkflowsoftClaimsOperator is deprecated: use WorkflowsoftListClaimsOperator, "
                        "WorkflowsoftReleaseClaimsOperator or WorkflowsoftParkClaimsOperator")
        super().__init__(**kwargs)
        self.action = action
        self.integration_diagram_id = integration_diagram_id
        self.instance_ids = instance_ids
        self.include_done = include_done

    @fails_without_retries
    def execute(self, context: Context) -> list[dict[str, Any]]:
        action = str(self.action).strip().lower()
        if action == "list":
            return self._list(context, self.integration_diagram_id, self.include_done)
        if action in ACTIONS:
            if not _instance_ids(self.instance_ids):
                raise WorkflowsoftInputError(f"action {action!r} needs instance_ids (see action 'list')")
            return self._decide(context, action, self.instance_ids)
        raise WorkflowsoftInputError(f"action must be 'list', 'release', 'park' or 'forget', got {self.action!r}")


__all__ = [
    "WorkflowsoftClaimsOperator",
    "WorkflowsoftCompleteStepOperator",
    "WorkflowsoftCreateTaskOperator",
    "WorkflowsoftGetFieldsOperator",
    "WorkflowsoftListClaimsOperator",
    "WorkflowsoftParkClaimsOperator",
    "WorkflowsoftReleaseClaimsOperator",
    "WorkflowsoftStartProcessOperator",
    "WorkflowsoftUpdateFieldsOperator",
    "coerce_instance_id",
]



def __getattr__(name: str) -> Any:
    # The batch operator lives in its own module: importable from here as before, with a deprecation warning.
    if name in ("WorkflowsoftIntegrationWorkerOperator", "WorkflowsoftProcessInstancesOperator"):
        warn_deprecated(f"{__name__}.{name} is deprecated: import it from {batch.__name__}")
        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
