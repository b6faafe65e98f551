"""What every Workflowsoft sensor and operator shares: the connection id, one hook, and the ledgers."""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft import ledger
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook


class WorkflowsoftTaskMixin:
    """Mixed into the sensor and the operators (before Airflow's base class).

    ``ledger_store`` is where the ledgers live: ``None`` means Airflow Variables; tests set a
    ``ledger.MemoryStore`` through the constructor argument or this class attribute.
    """

    workflowsoft_conn_id: str
    ledger_store: Any = None
    _hook: WorkflowsoftHook | None = None
    _claims: ledger.ClaimsLedger | None = None
    _variables: ledger.VariableStore | None = None

    def _set_ledger_store(self, ledger_store: Any) -> None:
        if ledger_store is not None:
            self.ledger_store = ledger_store

    @property
    def hook(self) -> WorkflowsoftHook:
        """One hook per task (one client: one token per lifetime, pooled connections)."""
        if self._hook is None:
            self._hook = WorkflowsoftHook(self.workflowsoft_conn_id)
        return self._hook

    @property
    def claims(self) -> ledger.ClaimsLedger:
        """One claims ledger per task (it remembers the records it wrote: fewer Variable round trips)."""
        if self._claims is None or self._claims.store is not self._store():
            self._claims = ledger.ClaimsLedger(self.workflowsoft_conn_id, store=self._store())
        return self._claims

    def _store(self) -> Any:
        if self.ledger_store is not None:
            return self.ledger_store
        if self._variables is None:
            self._variables = ledger.VariableStore()
        return self._variables

    @property
    def creates(self) -> ledger.CreateLedger:
        return ledger.CreateLedger(store=self._store())
