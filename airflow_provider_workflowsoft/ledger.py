"""Deprecated 0.1 module: the records moved to :mod:`airflow_provider_workflowsoft.records`.

``MemoryStore`` and ``VariableStore`` are in :mod:`.records.stores`, ``ClaimsLedger`` in
:mod:`.records.claims`, ``CreateLedger`` and ``DuplicateRiskError`` in :mod:`.records.creates`.
"""

from __future__ import annotations

from airflow_provider_workflowsoft.deprecation import warn_deprecated
from airflow_provider_workflowsoft.records.claims import CLAIMED, DONE, ClaimsLedger
from airflow_provider_workflowsoft.records.creates import CreateLedger, DuplicateRiskError
from airflow_provider_workflowsoft.records.stores import KeyValueStore, MemoryStore, VariableStore

warn_deprecated("airflow_provider_workflowsoft.ledger is deprecated: import from airflow_provider_workflowsoft.records")

__all__ = ["CLAIMED", "DONE", "ClaimsLedger", "CreateLedger", "DuplicateRiskError", "KeyValueStore", "MemoryStore",
           "VariableStore"]
