"""The deferred sensor's trigger keeps the claims it holds alive until its event; a dead trigger's come back.

With ``claims_owner`` the trigger claims each instance in the task instance's record as soon as it is polled, and holds
it until its event (the rest of the drain, reading fields, rounds retried after a failure). Lease 0.6 s, reading the
fields of two instances 1.7 leases, a second run of the step draining in the middle of it; the control switches
renewals off (the same timing then re-offers what the trigger holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.triggers.workflowsoft import WorkflowsoftIntegrationTrigger
from tests.conftest import second_drain
from tests.triggers.test_trigger import first_event, ids

CONN = "workflowsoft_default"
LEASE = dt.timedelta(seconds=0.6)
FIELDS_PATH = "/api/v2/workflows/instances/tasks/"
OWNER = "dag/run1/wait/-1"


def trigger(store: MemoryStore) -> WorkflowsoftIntegrationTrigger:
    made = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=2, fetch_fields=True,
                                          poll_interval=0.01, claims_owner=OWNER, reclaim_after=LEASE.total_seconds())
    made.claims_store = store
    return made



@pytest.mark.parametrize("renewing", [True, False])
def test_a_trigger_holding_claims_longer_than_the_lease_keeps_them_until_its_event(
        emu: EmulatorServer, store: MemoryStore, monkeypatch: pytest.MonkeyPatch, renewing: bool) -> None:
    if not renewing:
        monkeypatch.setattr("airflow_provider_workflowsoft.records.leases.renew_interval", lambda *a, **k: None)
    emu.create_instances(11, count=2)
    emu.set_faults(latency_ms=500, paths=[FIELDS_PATH])
    offered: list[Any] = []
    second = second_drain(store, 0.85, offered, lease=LEASE)  # past the claims' lease, while the trigger reads fields
    event = first_event(trigger(store))
    second.join(10)
    assert event["status"] == "success" and ids(event["instances"]) == [5001, 5002]
    if not renewing:
        assert offered == [5001, 5002]  # the control: without renewals the second run takes them
        return
    assert offered == []
    record = ClaimsLedger(CONN, store, owner=OWNER)
    assert all("renewed_at" in record.own_claim(i) for i in (5001, 5002))  # type: ignore[operator]


def test_a_trigger_that_dies_holding_claims_gives_them_back_one_lease_after_its_last_beat(
        emu: EmulatorServer, store: MemoryStore) -> None:
    emu.create_instances(11, count=2)
    emu.set_faults(latency_ms=2000, paths=[FIELDS_PATH])  # it dies while reading fields, holding both claims

    async def run_then_die() -> None:
        agen = trigger(store).run()
        step = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.5)  # both claimed, renewed at least once (every 0.2 s)
        step.cancel()  # the triggerer dies: nothing of the trigger runs any more
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await step

    asyncio.run(run_then_die())
    dead_at = time.monotonic()
    record = ClaimsLedger(CONN, store, owner=OWNER)
    assert all("renewed_at" in record.own_claim(i) for i in (5001, 5002))  # type: ignore[operator]
    within: list[Any] = []
    second_drain(store, 0.0, within, lease=LEASE).join(10)
    time.sleep(max(0.0, dead_at + LEASE.total_seconds() + 0.05 - time.monotonic()))
    after: list[Any] = []
    second_drain(store, 0.0, after, run="run3", lease=LEASE).join(10)
    assert within == [] and after == [5001, 5002]
