"""Each ledger operation is a Variable round trip through Airflow's API server: keep them few."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow_provider_workflowsoft.ledger import CLAIMED, DONE, ClaimsLedger, MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def get(self, key: str) -> Any:
        self.calls.append(("get", key))
        return super().get(key)

    def set(self, key: str, value: Any) -> None:
        self.calls.append(("set", key))
        super().set(key, value)


def test_claim_then_complete_costs_five_round_trips_per_instance() -> None:
    store = CountingStore()
    claims = ClaimsLedger("conn", store)
    n = 10
    for iid in range(5001, 5001 + n):
        claims.claim(11, [{"IntegrationInstanceId": iid, "ProcessInstanceId": 1}])
        claims.mark_completing(iid)
        claims.mark_done(iid, {"completed": True})
    # per instance: read the old record, write the claim, write the index, mark completing, mark done;
    # plus the first read of the index and of the list of steps, and the first write of that list
    assert len(store.calls) == 5 * n + 3
    assert all(claims.state(iid) == DONE for iid in range(5001, 5001 + n))
    assert ClaimsLedger("conn", store).list_claims(11, include_done=True)[0]["integration_instance_id"] == 5001


def test_decisions_read_the_store_not_what_was_remembered() -> None:
    store = MemoryStore()
    sensor_side = ClaimsLedger("conn", store, clock=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    sensor_side.claim(11, [{"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}])
    ClaimsLedger("conn", store).mark_done(5001)  # another process completes it
    assert sensor_side.state(5001) == DONE
    later = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    sensor_side.clock = lambda: later
    assert sensor_side.reclaim(11, dt.timedelta(minutes=1)) == []  # done elsewhere: not offered again


def test_a_claim_released_elsewhere_is_not_offered_again() -> None:
    store = MemoryStore()
    sensor_side = ClaimsLedger("conn", store)
    sensor_side.claim(11, [{"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}])
    assert ClaimsLedger("conn", store).release([5001]) == [5001]
    sensor_side.claim(11, [{"IntegrationInstanceId": 5002, "ProcessInstanceId": 2}])
    offered = sensor_side.reclaim(11, dt.timedelta(0))
    assert [i["IntegrationInstanceId"] for i in offered] == [5002]
    assert [r["state"] for r in sensor_side.list_claims(11)] == [CLAIMED]
