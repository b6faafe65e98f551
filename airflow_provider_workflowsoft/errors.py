"""The provider's errors, importable from their 0.1 path (``airflow_provider_workflowsoft.errors``).

They are defined in :mod:`airflow_provider_workflowsoft.api.errors`, free of Airflow.
"""

from airflow_provider_workflowsoft.api.errors import *  # noqa: F403
from airflow_provider_workflowsoft.api.errors import __all__  # noqa: F401
