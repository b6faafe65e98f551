"""Deprecations of this provider: Airflow's provider deprecation warning, pointed at the user's code.

Every old name that keeps working (a renamed class, argument or module) warns through :func:`warn_deprecated`:

* the category is :class:`WorkflowsoftDeprecationWarning`, an ``AirflowProviderDeprecationWarning`` (what the
  official providers raise, and what Airflow's own test setup turns into errors), so that
  ``warnings.filterwarnings(..., category=AirflowProviderDeprecationWarning)`` selects it;
* the warning names the first frame outside this package and outside Airflow: the DAG file's line, not
  Airflow's ``BaseOperator`` machinery that calls a constructor;
* it is shown by default (Python hides a ``DeprecationWarning`` not raised in ``__main__``): in plain ``python
  dag.py``, and in Airflow 3.3's ``airflow dags test`` and dag-processor log (before 3.3, ``airflow dags test``
  prints nothing a DAG file's parse warned); ``-W`` options or a filter of the user's own still decide (nothing
  is added when ``sys.warnoptions`` is set).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import airflow
from airflow.exceptions import AirflowProviderDeprecationWarning

_INTERNAL = (str(Path(__file__).resolve().parent), str(Path(airflow.__file__).resolve().parent))


class WorkflowsoftDeprecationWarning(AirflowProviderDeprecationWarning):
    """An old name of this provider was used; the message says what replaces it."""


if not sys.warnoptions:
    warnings.filterwarnings("default", category=WorkflowsoftDeprecationWarning)


def _outside(filename: str) -> bool:
    if filename.startswith("<frozen"):  # importlib, while a deprecated module is imported
        return False
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    return not resolved.startswith(_INTERNAL)


def warn_deprecated(message: str) -> None:
    """Warn that an old name was used, at the first line of the user's code that led here."""
    frame = sys._getframe(1)
    level = 2  # warnings.warn counts warn_deprecated itself as 1
    while frame.f_back is not None and not _outside(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, WorkflowsoftDeprecationWarning, stacklevel=level)


class RenamedAttribute:
    """A class attribute under its old name: reading it returns the new one's value, with a deprecation warning.

    .. code-block:: python

        class WorkflowsoftIntegrationSensor(...):
            integration_diagram_id = RenamedAttribute("integration_step_id")
    """

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        warn_deprecated(f"{type(obj).__name__}.{self.old} is deprecated: use {self.new}")
        return getattr(obj, self.new)


__all__ = ["RenamedAttribute", "WorkflowsoftDeprecationWarning", "warn_deprecated"]
