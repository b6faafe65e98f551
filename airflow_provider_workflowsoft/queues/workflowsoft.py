"""The ``workflowsoft`` queue provider of ``apache-airflow-providers-common-messaging``.

Airflow's standard idiom for event-driven scheduling, with an integration step as the queue:

.. code-block:: python

    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher, dag

    trigger = MessageQueueTrigger(scheme="workflowsoft", integration_step_id=21, max_instances=10, poll_interval=30)
    notify_crm = Asset("workflowsoft_notify_crm", watchers=[AssetWatcher(name="notify_crm_watcher", trigger=trigger)])

    @dag(schedule=[notify_crm])
    def on_notify_crm(): ...

``MessageQueueTrigger`` picks this provider by its scheme (the provider lists it under its provider info's
``queues`` key) and runs
:class:`~airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationEventTrigger` with the
keyword arguments given: the same watcher as
:func:`~airflow_provider_workflowsoft.assets.workflowsoft.integration_step_asset`, with the same claims (its
record in the watched Asset's state store, named by the step's URI) and the same guarantees. Read a run's instances with
:func:`~airflow_provider_workflowsoft.assets.workflowsoft.instances_from_events`.

Needs ``apache-airflow-providers-common-messaging`` 2.1 or newer (``pip install
'airflow-provider-workflowsoft[messaging]'``), and Airflow 3.1 or newer (where the watcher keeps its claims: the
Asset's state store on 3.3, Variables and ack slots on 3.1, as for ``integration_step_asset``).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationEventTrigger
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_1_PLUS, airflow_version

try:
    from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider
except ImportError as exc:  # the optional dependency is missing
    raise ImportError(
        "The workflowsoft queue provider (MessageQueueTrigger(scheme=\"workflowsoft\", ...)) needs "
        "apache-airflow-providers-common-messaging 2.1 or newer: pip install "
        "'airflow-provider-workflowsoft[messaging]' (or watch the step with "
        "airflow_provider_workflowsoft.assets.workflowsoft.integration_step_asset, which needs nothing more)"
    ) from exc

#: The scheme ``MessageQueueTrigger(scheme=...)`` names this provider by.
SCHEME = "workflowsoft"


class WorkflowsoftMessageQueueProvider(BaseMessageQueueProvider):
    """An integration step as a message queue: each new integration instance is a message.

    ``MessageQueueTrigger(scheme="workflowsoft", **kwargs)`` hands ``kwargs`` to
    :class:`~airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationEventTrigger`: the step
    (``integration_step_id``, or ``process_diagram_name`` and ``integration_step_name``), ``workflowsoft_conn_id``,
    ``max_instances``, ``poll_interval``, ``reclaim_after``, ``fetch_fields``, ``max_offers``.
    """

    scheme = SCHEME

    def trigger_class(self) -> type[WorkflowsoftIntegrationEventTrigger]:
        """Return the watcher's trigger; refused before Airflow 3.1 (its triggerer serves no Variables to triggers)."""
        if not AIRFLOW_V_3_1_PLUS:
            raise RuntimeError(
                f"MessageQueueTrigger(scheme=\"workflowsoft\") needs Airflow 3.1 or newer; this is Airflow "
                f"{airflow_version()}. The watcher keeps its claims where its triggerer serves them (Variables from "
                "3.1, the Asset state store on 3.3): without them an instance polled just before a triggerer died "
                "would be lost. On this Airflow, schedule the DAG and wait with WorkflowsoftIntegrationSensor "
                "(deferrable=True)."
            )
        return WorkflowsoftIntegrationEventTrigger

    def trigger_kwargs(self, queue: str, **kwargs: Any) -> dict[str, Any]:
        """Scheme-based dispatch only: the deprecated queue-URI form passes nothing more."""
        return {}


__all__ = ["SCHEME", "WorkflowsoftMessageQueueProvider"]
