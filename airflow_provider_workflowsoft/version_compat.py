"""Everything that differs between the Airflow versions this provider supports, in one module.

Airflow names come from ``apache-airflow-providers-common-compat`` (``common.compat.sdk``: Task SDK paths on
Airflow 3, the old paths on 2.11), the way the official providers import them. Feature gates are the
``AIRFLOW_V_*_PLUS`` flags (the official providers copy the same few lines), and the few behaviours that
differ are wrapped here (Variables, async-safe connection reads, the task-state store) so that no other
module tests a version.

Only the operator, sensor, trigger, hook and records layers import this module; the Workflowsoft API
layer (:mod:`airflow_provider_workflowsoft.api`) imports nothing from Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
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
    """The running Airflow's version, for messages that name the version a feature needs."""
    from airflow import __version__

    return str(__version__)


AIRFLOW_V_3_0_PLUS: bool = _airflow_version() >= (3, 0, 0)
AIRFLOW_V_3_3_PLUS: bool = _airflow_version() >= (3, 3, 0)
AIRFLOW_V_3_4_PLUS: bool = _airflow_version() >= (3, 4, 0)

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger, TriggerEvent


def __getattr__(name: str) -> Any:
    # Triggers' base classes load only where a trigger is defined, not in every DAG file.
    if name in ("BaseTrigger", "TriggerEvent", "BaseEventTrigger"):
        from airflow.triggers import base

        if name == "BaseEventTrigger" and not hasattr(base, name):
            raise ImportError(
                f"BaseEventTrigger (event-driven scheduling: Asset watchers) needs Airflow 3.0 or later; this is "
                f"Airflow {'.'.join(map(str, _airflow_version()))}. Schedule the DAG and use the sensor instead."
            )
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def asset_classes() -> tuple[Any, Any]:
    """``(Asset, AssetWatcher)`` of the Task SDK (Airflow 3; callers check the version first)."""
    from airflow.sdk import Asset, AssetWatcher

    return Asset, AssetWatcher


def openlineage_classes() -> dict[str, Any] | None:
    """The OpenLineage classes completions report with, or ``None`` without the OpenLineage provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    if OutputDataset is None:  # common.compat's placeholder when the OpenLineage client is missing
        return None
    return {"OperatorLineage": OperatorLineage, "OutputDataset": OutputDataset,
            "OutputStatisticsOutputDatasetFacet": OutputStatisticsOutputDatasetFacet,
            "SchemaDatasetFacet": SchemaDatasetFacet, "SchemaDatasetFacetFields": SchemaDatasetFacetFields}


# -- configuration, secrets, decorators ------------------------------------------------------------


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, the default of every ``deferrable`` argument."""
    from airflow.providers.common.compat.sdk import conf

    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def stats() -> Any:
    """Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` configures it).

    The same import on every supported version: ``common.compat.sdk`` maps it to
    ``airflow.sdk.observability.stats`` on Airflow 3.3 and to ``airflow.stats`` on 2.11; both take
    ``incr/gauge/timing(stat, ..., tags=...)``."""
    from airflow.providers.common.compat.sdk import Stats

    return Stats


def metrics_enabled() -> bool:
    """Whether Airflow sends metrics from this process's configuration (``[metrics] statsd_on``,
    ``statsd_datadog_enabled`` or ``otel_on``): without any, nothing is measured at all."""
    from airflow.providers.common.compat.sdk import conf

    return any(conf.getboolean("metrics", option, fallback=False)
               for option in ("statsd_on", "statsd_datadog_enabled", "otel_on"))


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker (synchronous code: tasks, hooks)."""
    if secret:
        from airflow.providers.common.compat.sdk import mask_secret as _mask

        _mask(secret)


def mask_secret_in_process(secret: str) -> None:
    """Register ``secret`` with this process's masker only, without a supervisor call: safe from a
    trigger's event loop (tokens minted inside a trigger; the triggerer's own log lines are redacted by it).
    Airflow < 3.3 has only the in-process masker, so the ordinary call is the same thing there."""
    if not secret:
        return
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker
    except ImportError:  # Airflow < 3.3
        mask_secret(secret)
        return
    _secrets_masker().add_mask(secret)


async def amask_secret(secret: str) -> None:
    """Register ``secret`` from a trigger's event loop without blocking it (no supervisor round trip on
    the loop: the synchronous call can raise ``DeadlockImminentError`` in the 3.x triggerer)."""
    if not secret:
        return
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # Airflow < 3.3: the masker is in-process there
        mask_secret(secret)
        return
    await _amask(secret)


def supervisor_answers_only_sync() -> bool:
    """Whether this process's supervisor channel answers synchronous requests only.

    ``airflow dags test`` runs a deferred task's trigger in-process with ``InProcessSupervisorComms``, which
    has ``send`` but no ``asend``. The Task SDK's async connection read (``Connection.async_get``, through
    ``ExecutionAPISecretsBackend.aget_connection``) calls ``asend``, swallows the ``AttributeError`` as
    "not found here" and falls through to the environment-variable backend: a connection stored in the
    metadata database then raises ``AirflowNotFoundException``. The real triggerer's channel has ``asend``.
    """
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # Airflow 2: no supervisor channel; connections come from the database directly
        return False
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms is not None and not callable(getattr(comms, "asend", None))


async def aget_connection(conn_id: str) -> Any:
    """A connection read from a trigger's event loop, the async-safe way on every version.

    In the real triggerer it is the async read (nothing on the event loop waits for the supervisor). Where
    the supervisor channel has no async requests (``airflow dags test``'s in-process trigger run, see
    :func:`supervisor_answers_only_sync`), the synchronous read runs in a worker thread instead, so a
    connection stored in the metadata database is found there too.
    """
    import asyncio

    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # pragma: no cover - older common.compat
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
    if supervisor_answers_only_sync():
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
    return await get_async_connection(conn_id)


async def aconnection_extras(conn: Any) -> Any:
    """A connection's extras, read without a synchronous supervisor call on the event loop."""
    aextra = getattr(conn, "aextra_dejson", None)
    if aextra is not None:
        return await aextra()
    return conn.extra_dejson


def task_decorator_base() -> tuple[Any, Any]:
    """``(DecoratedOperator, task_decorator_factory)`` of the running Airflow."""
    try:
        from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
    except ImportError:  # Airflow 2.11
        from airflow.decorators.base import (  # type: ignore[no-redef]
            DecoratedOperator,
            task_decorator_factory,
        )
    return DecoratedOperator, task_decorator_factory


# -- the task instance's own store (Airflow 3.3+) --------------------------------------------------


def task_state_store(context: Any) -> Any:
    """The running task instance's ``context["task_state_store"]`` (AIP-103, Airflow 3.3+), or ``None``
    where Airflow has none (before 3.3; callers then keep their records in Variables)."""
    if not AIRFLOW_V_3_3_PLUS:
        return None
    getter = getattr(context, "get", None)
    return getter("task_state_store") if getter is not None else None


# -- Variables ------------------------------------------------------------------------------------


def variable_get_json(key: str) -> Any:
    """A JSON Variable, or ``None`` when it does not exist (3.x says ``default=``, 2.11 ``default_var=``)."""
    from airflow.providers.common.compat.sdk import Variable

    if AIRFLOW_V_3_0_PLUS:
        return Variable.get(key, default=None, deserialize_json=True)
    return Variable.get(key, default_var=None, deserialize_json=True)  # type: ignore[call-arg]


def variable_set_json(key: str, value: Any) -> None:
    from airflow.providers.common.compat.sdk import Variable

    Variable.set(key, value, serialize_json=True)


def variable_delete(key: str) -> None:
    from airflow.providers.common.compat.sdk import Variable

    Variable.delete(key)


def variable_keys(prefix: str) -> list[str]:
    """Keys of the Variables starting with ``prefix`` (the Task SDK's ``Variable.keys`` on 3.x; a query
    of the metadata database on 2.11, where tasks still reach it)."""
    from airflow.providers.common.compat.sdk import Variable

    keys = getattr(Variable, "keys", None)
    if keys is not None:
        return sorted(k for k in keys(prefix=prefix) if k.startswith(prefix))
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(VariableModel.key).filter(VariableModel.key.startswith(prefix)).all()
    return sorted(row[0] for row in rows)


# -- the metadata database, outside tasks (the command line) ----------------------------------------


def metadata_variable_get_json(key: str) -> Any:
    """A JSON Variable read from the metadata database (``None`` when missing): outside a task only."""
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None, deserialize_json=True)


def metadata_variable_set_json(key: str, value: Any) -> None:
    from airflow.models.variable import Variable

    Variable.set(key, value, serialize_json=True)


def metadata_variable_delete(key: str) -> None:
    from airflow.models.variable import Variable

    Variable.delete(key)


def metadata_variable_keys(prefix: str) -> list[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(Variable.key).filter(Variable.key.startswith(prefix)).all()
    return sorted(row[0] for row in rows)


def metadata_asset_state_rows(prefix: str) -> list[tuple[str, str, str]]:
    """``(asset URI, key, JSON text)`` of the Asset state-store entries whose key starts with ``prefix``
    (Airflow 3.3's ``asset_state_store`` table; ``[]`` before 3.3, which has none)."""
    if not AIRFLOW_V_3_3_PLUS:
        return []
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetModel.uri, AssetStateStoreModel.key, AssetStateStoreModel.value)
                .join(AssetModel, AssetModel.id == AssetStateStoreModel.asset_id)
                .filter(AssetStateStoreModel.key.startswith(prefix)).all())
    return [(str(uri), str(key), str(value)) for uri, key, value in rows]


def how_to_delete_variable(key: str) -> str:
    """The user's way to delete a Variable on this Airflow version."""
    return f"airflow variables delete {key}"


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AIRFLOW_V_3_4_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseHook",
    "BaseNotifier",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "PokeReturnValue",
    "TriggerEvent",
    "aconnection_extras",
    "aget_connection",
    "amask_secret",
    "default_deferrable",
    "mask_secret",
    "mask_secret_in_process",
    "metadata_asset_state_rows",
    "metadata_variable_delete",
    "metadata_variable_get_json",
    "metadata_variable_keys",
    "metadata_variable_set_json",
    "metrics_enabled",
    "stats",
    "task_decorator_base",
    "task_state_store",
    "variable_delete",
    "variable_get_json",
    "variable_keys",
    "variable_set_json",
]
