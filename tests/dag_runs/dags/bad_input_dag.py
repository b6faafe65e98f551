"""Bad input in a task with retries: it fails at once, without a retry (``AirflowFailException``)."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.common.compat.sdk import dag

from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftGetFieldsOperator


@dag(dag_id="workflowsoft_bad_input", schedule=None, start_date=pendulum.datetime(2024, 1, 1), catchup=False)
def workflowsoft_bad_input():
    WorkflowsoftGetFieldsOperator(task_id="read", integration_instance_id="not-an-id", retries=3,
                                  retry_delay=dt.timedelta(seconds=1))


workflowsoft_bad_input()
