"""``WorkflowsoftNotifier``: creates a Workflowsoft task for a person when an Airflow task fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.protocol import blank
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.version_compat import BaseNotifier

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


class WorkflowsoftNotifier(BaseNotifier):
    """Creates a Workflowsoft task, for example for the person on duty when a task fails.

    Title and description are Jinja templates rendered with the failing task's context (``ti``,
    ``dag``, ``run_id``, ``exception``...); by default they name the DAG, the task, the run and link
    to the log.

    .. code-block:: python

        PythonOperator(
            task_id="load",
            python_callable=load,
            on_failure_callback=WorkflowsoftNotifier(assignee="ops@example.com", on_behalf_of=1),
        )

    :param title: the task's title (templated)
    :param description: the task's description (templated)
    :param assignee: who gets the task: a user id, an email or a full name
    :param on_behalf_of: who creates it: a user id, an email or a full name (default: the assignee)
    :param workflowsoft_conn_id: the Workflowsoft connection id
    """

    template_fields: Sequence[str] = ("title", "description", "assignee", "on_behalf_of", "workflowsoft_conn_id")

    def __init__(
        self,
        *,
        title: str = DEFAULT_TITLE,
        description: str | None = DEFAULT_DESCRIPTION,
        assignee: Any = None,
        on_behalf_of: Any = None,
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
    ) -> None:
        super().__init__()
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

    def notify(self, context: Any) -> None:
        hook = self.hook
        assignee = None if blank(self.assignee) else hook.client.resolve_user_id(self.assignee)
        creator = assignee if blank(self.on_behalf_of) else hook.client.resolve_user_id(self.on_behalf_of)
        title = str(self.title or "").strip()[:250] or "Airflow task failed"
        self.created = hook.client.create_task(
            title, assigned_user_id=assignee, description=self.description, on_behalf_of=creator
        )
        self.log.info("Created Workflowsoft task %s: %r", self.created.get("Id"), title)


__all__ = ["WorkflowsoftNotifier"]
