"""Version facts of the Airflow this provider runs on: the ``AIRFLOW_V_*_PLUS`` flags and the few imports they gate.

Like the official providers' ``version_compat.py``, this module holds no behaviour. Airflow's base classes
and exceptions come from ``apache-airflow-providers-common-compat`` (``common.compat.sdk``: Task SDK paths on
Airflow 3, the old paths on 2.11), re-exported here for the operators, sensor, hook and notifier. Code that
differs by version lives where it belongs and tests these flags there (Variables in ``records/stores.py``,
the async connection read in ``hooks/workflowsoft.py``, the decorator base in ``decorators/``). The
Workflowsoft API layer (:mod:`airflow_provider_workflowsoft.api`) imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSensorTimeout,
    BaseHook,
    BaseNotifier,
    BaseOperator,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
)


def _airflow_version() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


def airflow_version() -> str:
    """Return the running Airflow's version, for messages that name the version a feature needs."""
    from airflow import __version__

    return str(__version__)


AIRFLOW_V_3_0_PLUS: bool = _airflow_version() >= (3, 0, 0)
AIRFLOW_V_3_1_PLUS: bool = _airflow_version() >= (3, 1, 0)
AIRFLOW_V_3_3_PLUS: bool = _airflow_version() >= (3, 3, 0)


def asset_classes() -> tuple[Any, Any]:  # the Task SDK's, Airflow 3 only
    """``(Asset, AssetWatcher)`` of the Task SDK (Airflow 3; callers check the version first)."""
    from airflow.sdk import Asset, AssetWatcher

    return Asset, AssetWatcher


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseSensorOperator",
    "Context",
    "PokeReturnValue",
]
