"""The one place that imports Airflow: Airflow 3.x public paths first, Airflow 2.11 paths as fallback.

Every other module of the provider imports Airflow names from here, so a change of Airflow's public
API is mended in one file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:  # Airflow 3.x: exceptions live in the Task SDK (the old path warns)
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
except ImportError:  # Airflow 2.11
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
    )

try:  # Airflow 3.x: the Task SDK is the public authoring interface.
    from airflow.sdk import (
        BaseHook,
        BaseNotifier,
        BaseOperator,
        BaseSensorOperator,
        Connection,
        Context,
        PokeReturnValue,
        Variable,
        get_current_context,
    )

    AIRFLOW_V3 = True
except ImportError:  # Airflow 2.11
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]
    from airflow.models.connection import Connection  # type: ignore[no-redef,assignment]
    from airflow.models.variable import Variable  # type: ignore[no-redef,assignment]
    from airflow.notifications.basenotifier import BaseNotifier  # type: ignore[no-redef]
    from airflow.operators.python import get_current_context  # type: ignore[no-redef,attr-defined]
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue  # type: ignore[no-redef]
    from airflow.utils.context import Context  # type: ignore[no-redef,assignment,attr-defined]

    AIRFLOW_V3 = False

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger, TriggerEvent


def __getattr__(name: str) -> Any:
    # Triggers' base classes load only where a trigger is defined, not in every DAG file.
    if name in ("BaseTrigger", "TriggerEvent"):
        from airflow.triggers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker (task and supervisor logs alike)."""
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # Airflow 2.11
        from airflow.utils.log.secrets_masker import mask_secret as _mask  # type: ignore[no-redef]
    _mask(secret)


def conf_getboolean(section: str, key: str, fallback: bool) -> bool:
    """Read a boolean from Airflow's configuration (lazily: DAG files should not pay for it)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - every supported Airflow has it
        return fallback
    value: Any = conf.getboolean(section, key, fallback=fallback)
    return bool(value)


def task_decorator_base() -> tuple[Any, Any]:
    """``(DecoratedOperator, task_decorator_factory)`` of the running Airflow (imported only by the
    ``decorators`` modules, so DAG files without ``@task.workflowsoft_*`` do not pay for them)."""
    try:
        from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
    except ImportError:  # Airflow 2.11
        from airflow.decorators.base import (  # type: ignore[no-redef]
            DecoratedOperator,
            task_decorator_factory,
        )
    return DecoratedOperator, task_decorator_factory


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, the default of every ``deferrable`` argument."""
    return conf_getboolean("operators", "default_deferrable", fallback=False)


__all__ = [
    "AIRFLOW_V3",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "PokeReturnValue",
    "TriggerEvent",
    "Variable",
    "conf_getboolean",
    "default_deferrable",
    "get_current_context",
    "mask_secret",
    "task_decorator_base",
]
