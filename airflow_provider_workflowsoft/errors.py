"""Deprecated 0.1 module: the provider's errors are in :mod:`airflow_provider_workflowsoft.api.errors`.

They are defined there, free of Airflow; importing them from here still works, with a deprecation warning.
"""

from airflow_provider_workflowsoft.api.errors import *  # noqa: F403
from airflow_provider_workflowsoft.api.errors import __all__  # noqa: F401
from airflow_provider_workflowsoft.deprecation import warn_deprecated

warn_deprecated(f"{__name__} is deprecated: import from airflow_provider_workflowsoft.api.errors")
