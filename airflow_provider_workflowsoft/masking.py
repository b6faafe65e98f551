"""Register secrets with Airflow's secrets masker: from tasks and hooks, and from a trigger's event loop.

Logs, rendered templates and task output are redacted by the masker; a secret registered here never shows.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import mask_secret as _mask


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker (synchronous code: tasks, hooks)."""
    if secret:
        _mask(secret)


def mask_secret_in_process(secret: str) -> None:
    """Register ``secret`` with this process's masker only, without a supervisor call.

    Safe from a trigger's event loop (tokens minted inside a trigger; the triggerer's own log lines are redacted by it).
    Airflow < 3.3 has only the in-process masker, so the ordinary call is the same thing there.
    """
    if not secret:
        return
    try:
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker
    except ImportError:  # Airflow < 3.3
        mask_secret(secret)
        return
    _secrets_masker().add_mask(secret)


async def amask_secret(secret: str) -> None:
    """Register ``secret`` from a trigger's event loop without blocking it.

    No supervisor round trip on the loop: the synchronous call can raise ``DeadlockImminentError`` in the 3.x triggerer.
    """
    if not secret:
        return
    try:
        from airflow.sdk.log import amask_secret as _amask
    except ImportError:  # Airflow < 3.3: the masker is in-process there
        mask_secret(secret)
        return
    await _amask(secret)


__all__ = ["amask_secret", "mask_secret", "mask_secret_in_process"]
