"""The one way a task instance is named in the records: its owner name and its record keys.

The claims' owner, the claims record key and the create-idempotency key all come from here, so that a
retry of a task instance always finds what its earlier tries wrote.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

#: First part of every key this package writes into Airflow Variables.
PREFIX = "workflowsoft"


def safe(part: Any, limit: int = 60) -> str:
    """Return a key part of letters, digits and ``._-`` only (run ids hold ``:`` and ``+``), at most ``limit`` long."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(part))[:limit]


def owner_name(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """``<dag>/<run>/<task>/<map index>``: who holds a claim (readable, unique per task instance)."""
    return f"{dag_id}/{run_id}/{task_id}/{-1 if map_index is None else map_index}"


def owner_from_context(context: Any) -> str:
    """Return the owner name of the running task instance (``""`` outside a task)."""
    ti = context.get("ti") if isinstance(context, dict) or hasattr(context, "get") else None
    if ti is None:
        return ""
    return owner_name(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))


#: How an asset watcher's owner name starts (its claims live in its Asset's state store).
WATCHER = "asset-watcher:"


def is_watcher(owner: Any) -> bool:
    """Whether ``owner`` (a record's owner name) is an asset watcher."""
    return str(owner or "").startswith(WATCHER)


def watcher_owner(asset_uri: str) -> str:
    """Return the owner name of the asset watcher of an integration step's Asset: ``asset-watcher:<uri>``."""
    return WATCHER + asset_uri


def owner_key(owner: str) -> str:
    """Return a short, stable, key-safe form of an owner name.

    ``<dag>.<task>.<map index>.<hash>`` for a task instance, ``asset-watcher.<hash>`` for an asset watcher.
    """
    digest = hashlib.sha1(owner.encode()).hexdigest()[:12]
    if owner.startswith(WATCHER):
        return f"asset-watcher.{digest}"
    parts = owner.split("/")
    if len(parts) == 4:
        dag_id, _run_id, task_id, map_index = parts
        return f"{safe(dag_id, 40)}.{safe(task_id, 40)}.{safe(map_index, 8)}.{digest}"
    return f"{safe(owner, 40)}.{digest}" if owner else "anonymous"


def create_key(owner: str) -> str:
    """Return the create-idempotency key of a task instance in Airflow Variables (older Airflow).

    ``workflowsoft.create.<dag>.<run>.<task>.<map index>``.
    """
    parts = [safe(p, 80) for p in owner.split("/")]
    return ".".join([PREFIX, "create", *parts])


def claims_prefix(conn_id: str) -> str:
    """Every claims record of a connection starts with this (listed with ``Variable.keys(prefix=...)``)."""
    return f"{PREFIX}.claims.{safe(conn_id)}."


def claims_key(conn_id: str, owner: str) -> str:
    """Return the claims record of one task instance (its single writer)."""
    return claims_prefix(conn_id) + owner_key(owner)


def try_number(context: Any) -> int:
    """Return the running try of the task instance (1 outside a task)."""
    ti = context.get("ti") if hasattr(context, "get") else None
    try:
        return int(getattr(ti, "try_number", 1) or 1)
    except (TypeError, ValueError):
        return 1


def claims_command_prefix(conn_id: str) -> str:
    """Commands to a record's owner (a person's release, park or forget) start with this.

    Listed with the records (same prefix), so that reading them costs no extra round trip.
    """
    return claims_prefix(conn_id) + "~command."


def claims_command_key(conn_id: str) -> str:
    """Return a new command's key: one Variable per command, so that two people never overwrite each other's."""
    import uuid

    return claims_command_prefix(conn_id) + uuid.uuid4().hex[:16]


def ack_prefix(conn_id: str) -> str:
    """Every ack slot of a connection starts with this (outside the claims prefix: no lister reads them as records)."""
    return f"{PREFIX}.acks.{safe(conn_id)}."


def ack_key(conn_id: str, watcher: str, event_id: str) -> str:
    """Return the ack slot one event of an asset watcher names (Airflow before 3.3).

    ``workflowsoft.acks.<conn id>.<watcher hash>.<event id>``: the run that takes the event over mirrors its claims of
    the event's instances here, and the watcher reads it by this key (its triggerer lists no Variables).
    """
    digest = owner_key(watcher).rsplit(".", 1)[-1]
    return f"{ack_prefix(conn_id)}{digest}.{safe(event_id, 32)}"
