"""The provider's metadata, read by Airflow's providers manager (entry point ``apache_airflow_provider``).

Kept free of Airflow imports: Airflow reads it while it is still starting.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft import __version__
from airflow_provider_workflowsoft.connection_form import conn_fields, ui_field_behaviour


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-workflowsoft",
        "name": "Workflowsoft",
        "description": "Workflowsoft (https://www.workflowsoft.com/): integration steps, processes and tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Workflowsoft",
                "external-doc-url": "https://www.workflowsoft.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Workflowsoft",
                "python-modules": ["airflow_provider_workflowsoft.hooks.workflowsoft"],
            }
        ],
        "operators": [
            {
                "integration-name": "Workflowsoft",
                "python-modules": [
                    "airflow_provider_workflowsoft.operators.workflowsoft",
                    "airflow_provider_workflowsoft.operators.batch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Workflowsoft",
                "python-modules": ["airflow_provider_workflowsoft.sensors.workflowsoft"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Workflowsoft",
                "python-modules": ["airflow_provider_workflowsoft.triggers.workflowsoft"],
            }
        ],
        # Assets of integration steps (workflowsoft://<conn id>/integration-steps/<id>): URIs kept as written.
        "asset-uris": [{"schemes": ["workflowsoft"], "handler": None}],
        "task-decorators": [
            {
                "name": "workflowsoft_worker",
                "class-name": "airflow_provider_workflowsoft.decorators.workflowsoft.workflowsoft_worker_task",
            }
        ],
        # MessageQueueTrigger(scheme="workflowsoft", ...) of apache-airflow-providers-common-messaging (the
        # `messaging` extra); imported only by common.messaging.
        "queues": ["airflow_provider_workflowsoft.queues.workflowsoft.WorkflowsoftMessageQueueProvider"],
        "notifications": ["airflow_provider_workflowsoft.notifications.workflowsoft.WorkflowsoftNotifier"],
        "connection-types": [
            {
                "connection-type": "workflowsoft",
                "hook-class-name": "airflow_provider_workflowsoft.hooks.workflowsoft.WorkflowsoftHook",
                "hook-name": "Workflowsoft",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour(),
            }
        ],
    }
