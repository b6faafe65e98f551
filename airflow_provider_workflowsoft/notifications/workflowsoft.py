"""``WorkflowsoftNotifier``: a Workflowsoft task for a person when an Airflow task fails or a run misses its deadline.

As a task's ``on_failure_callback`` it runs synchronously (``notify``). As a deadline alert's callback
(``AsyncCallback(WorkflowsoftNotifier, kwargs={...})``, Airflow 3.1+) it runs in the triggerer, awaited
(``async_notify``): the connection is read with the async-safe helpers and the task is created with the async
client, so the triggerer's event loop never waits on a socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS, BaseNotifier

DEFAULT_TITLE = "Airflow task failed: {{ ti.dag_id }}.{{ ti.task_id }}"
DEFAULT_DESCRIPTION = (
    "Task {{ ti.task_id }} of DAG {{ ti.dag_id }} failed"
    "{% if ti.map_index is defined and ti.map_index is not none and ti.map_index >= 0 %}"
    " (map index {{ ti.map_index }}){% endif %}.\n"
    "Run: {{ run_id }}\n"
    "Try: {{ ti.try_number }}\n"
    "{% if exception is defined and exception %}Error: {{ exception }}\n{% endif %}"
    "Log: {{ ti.log_url }}"
)
#: The defaults where the callback is a deadline alert's (its context has ``dag_run`` and ``deadline``, no ``ti``).
DEADLINE_TITLE = "Airflow DAG run missed its deadline: {{ dag_run.dag_id }}"
DEADLINE_DESCRIPTION = (
    "DAG run {{ dag_run.dag_run_id }} of DAG {{ dag_run.dag_id }} missed its deadline "
    "({{ deadline.deadline_time }}); its state then: {{ dag_run.state }}."
)


def _is_deadline(context: Any) -> bool:
    return hasattr(context, "get") and context.get("deadline") is not None and context.get("ti") is None


class WorkflowsoftNotifier(BaseNotifier):
    """Creates a Workflowsoft task, for example for the person on duty when a task fails or a run is late.

    Title and description are Jinja templates rendered with the callback's context (a failing task's: ``ti``,
    ``dag``, ``run_id``, ``exception``...; a deadline alert's: ``dag_run``, ``deadline``); by default they name the
    DAG, the task, the run and link to the log, or, for a deadline alert, the DAG run and its deadline.

    .. code-block:: python

        PythonOperator(
            task_id="load",
            python_callable=load,
            on_failure_callback=WorkflowsoftNotifier(assignee="ops@example.com", on_behalf_of=1),
        )

        DAG(..., deadline=DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=30),
            callback=AsyncCallback(WorkflowsoftNotifier, kwargs={"assignee": "ops@example.com"}),
        ))

    :param title: the task's title (templated); default: the failure's, or the deadline's in a deadline alert
    :param description: the task's description (templated); default as for ``title``
    :param assignee: who gets the task: a user id, an email or a full name
    :param on_behalf_of: who creates it: a user id, an email or a full name (default: the connection's
        ``on_behalf_of`` when that is a user, else the assignee)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    :param context: the callback's context, given by Airflow when it builds the notifier in the triggerer (a
        deadline alert's ``AsyncCallback``)
    """

    template_fields: Sequence[str] = ("title", "description", "assignee", "on_behalf_of", "workflowsoft_conn_id")

    def __init__(
        self,
        *,
        title: str | None = None,
        description: str | None = None,
        assignee: Any = None,
        on_behalf_of: Any = None,
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
        context: Any = None,
    ) -> None:
        if AIRFLOW_V_3_0_PLUS:  # Airflow 3's notifier takes the context the triggerer builds it with
            super().__init__(context)
        else:
            super().__init__()
        deadline = _is_deadline(context)
        if title is None:
            title = DEADLINE_TITLE if deadline else DEFAULT_TITLE
        if description is None:
            description = DEADLINE_DESCRIPTION if deadline else DEFAULT_DESCRIPTION
        self.title = title
        self.description = description
        self.assignee = assignee
        self.on_behalf_of = on_behalf_of
        self.workflowsoft_conn_id = workflowsoft_conn_id
        #: the last task created (for logs and tests)
        self.created: dict[str, Any] | None = None

    @property
    def hook(self) -> WorkflowsoftHook:
        return WorkflowsoftHook(self.workflowsoft_conn_id)

    def _title(self) -> str:
        return str(self.title or "").strip()[:250] or "Airflow task failed"

    def notify(self, context: Any) -> None:
        hook = self.hook
        assignee, creator = hook.client.task_people(self.assignee, self.on_behalf_of, alert=True)
        title = self._title()
        self.created = hook.client.create_task(
            title, assigned_user_id=assignee, description=self.description, on_behalf_of=creator
        )
        self.log.info("Created Workflowsoft task %s: %r", self.created.get("Id"), title)

    async def async_notify(self, context: Any) -> None:
        """Create the task from an event loop (the triggerer, where deadline alerts run): nothing blocks it."""
        client = await self.hook.get_async_client()
        try:
            assignee, creator = await client.task_people(self.assignee, self.on_behalf_of, alert=True)
            title = self._title()
            self.created = await client.create_task(
                title, assigned_user_id=assignee, description=self.description, on_behalf_of=creator
            )
        finally:
            await client.aclose()
        self.log.info("Created Workflowsoft task %s: %r", self.created.get("Id"), title)


__all__ = ["DEADLINE_DESCRIPTION", "DEADLINE_TITLE", "WorkflowsoftNotifier"]
