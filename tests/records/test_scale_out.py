"""Scale-out: several batch workers draining one step at once (mapped task instances), claims before hand-over.

The ledger's rule with two records in one store, then four engines on one emulator over loopback, each with its own
record (one per map index) in a shared store, for both server readings: nothing worked on twice, nothing lost. The
same under real Airflow (mapped task instances) is in ``tests/dag_runs/test_batch_scale_out.py``, and over Celery
workers in ``tests/deployment/test_distributed.py``.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.worker.engine import WorkerEngine

CONN = "workflowsoft_default"
STEP = 11
HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def owner(index: int, run: str = "run1") -> str:
    return f"dag/{run}/work/{index}"


def answer(iid: int) -> dict[str, Any]:
    return {"IntegrationInstanceId": iid, "ProcessInstanceId": 90 + iid}


def test_each_map_index_has_its_own_claims_record() -> None:
    store = MemoryStore()
    keys = {ClaimsLedger(CONN, store, owner=owner(i)).key for i in range(4)}
    assert len(keys) == 4
    assert all(".work." in k for k in keys)


def test_the_second_claim_written_yields_to_the_first() -> None:
    store = MemoryStore()
    first, second = (ClaimsLedger(CONN, store, owner=owner(i), clock=lambda: T0) for i in (0, 1))
    first.claim(STEP, [answer(5001)])
    assert first.contested([5001], HOUR) == {}  # read before the second claim was written: handed over
    second.claim(STEP, [answer(5001), answer(5002)])
    held = second.contested([5001, 5002], HOUR)
    assert held == {5001: owner(0)}
    assert second.yield_claims(held) == [5001]
    assert second.own_state(5001) is None and second.own_state(5002) == "claimed"
    assert first.contested([5001], HOUR) == {}  # the first one keeps it


def test_both_claims_written_before_either_read_both_yield_and_nothing_is_lost() -> None:
    store = MemoryStore()
    clock = {"now": T0}
    dead = ClaimsLedger(CONN, store, owner=owner(0, "dead"), clock=lambda: clock["now"])
    dead.claim(STEP, [answer(5001)])
    clock["now"] = T0 + 2 * HOUR  # the dead run's lease is over
    a, b = (ClaimsLedger(CONN, store, owner=owner(i), clock=lambda: clock["now"]) for i in (1, 2))
    a.claim(STEP, [{**answer(5001), "shared": True}])
    b.claim(STEP, [{**answer(5001), "shared": True}])
    assert a.contested([5001], HOUR) == {5001: owner(2)} and b.contested([5001], HOUR) == {5001: owner(1)}
    a.yield_claims({5001: owner(2)})
    b.yield_claims({5001: owner(1)})
    # the dead run's claim is still there: the next drain offers it again
    c = ClaimsLedger(CONN, store, owner=owner(0, "run2"), clock=lambda: clock["now"])
    offered, _skip = c.prepare_drain(STEP, HOUR, 10)
    assert [i["IntegrationInstanceId"] for i in offered] == [5001] and c.yielded == []


def test_two_drains_taking_over_the_same_claims_hand_each_over_once() -> None:
    store = MemoryStore()
    clock = {"now": T0}
    dead = ClaimsLedger(CONN, store, owner=owner(0, "dead"), clock=lambda: clock["now"])
    dead.claim(STEP, [answer(i) for i in (5001, 5002, 5003)])
    clock["now"] = T0 + 2 * HOUR
    a, b = (ClaimsLedger(CONN, store, owner=owner(i), clock=lambda: clock["now"]) for i in (1, 2))
    offered_a, _ = a.prepare_drain(STEP, HOUR, 10)
    offered_b, skip_b = b.prepare_drain(STEP, HOUR, 10)
    assert sorted(i["IntegrationInstanceId"] for i in offered_a) == [5001, 5002, 5003]
    assert offered_b == [] and sorted(skip_b) == [5001, 5002, 5003]


@pytest.fixture
def clients(emulator: EmulatorServer) -> Iterator[list[WorkflowsoftClient]]:
    made = [WorkflowsoftClient(ClientConfig(base_url=emulator.base_url, api_token="demo-token", max_retries=0,
                                            pool_size=8)) for _ in range(4)]
    yield made
    for c in made:
        c.close()


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_four_engines_on_one_step_work_on_every_instance_once(
        emulator: EmulatorServer, clients: list[WorkflowsoftClient], semantics: str) -> None:
    emulator.update_settings(poll_semantics=semantics)
    count = 80 if semantics == "once" else 12
    ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=count)]
    emulator.set_faults(latency_ms=5)
    store, calls, lock = MemoryStore(), collections.Counter[int](), threading.Lock()

    def work(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        with lock:
            calls[int(instance["IntegrationInstanceId"])] += 1
        return {"Venue code": f"V-{instance['IntegrationInstanceId']}"}

    reports: list[dict[str, Any]] = []
    try:
        for round_no in range(40):  # until completed: a drain stops at the first repeated answer (one instance)
            engines = [WorkerEngine(clients[i], work, integration_step_id=STEP, max_instances=count, max_workers=4,
                                   claims=ClaimsLedger(CONN, store, owner=owner(i, f"run{round_no}")),
                                   reclaim_after=HOUR, progress_interval=None) for i in range(4)]
            threads = [threading.Thread(target=lambda e=e: reports.append(e.run())) for e in engines]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            views = {int(i["IntegrationInstanceId"]): i for i in emulator.snapshot()["instances"]}
            if all(views[i]["status"] == "completed" for i in ids):
                break
    finally:
        emulator.clear_faults()
    assert all(views[i]["status"] == "completed" for i in ids), "lost"
    doubled = {i: n for i, n in calls.items() if n > 1}
    assert not doubled, doubled
    assert sorted(calls) == sorted(ids)
    assert sum(r["already_completed_count"] for r in reports) == 0
    assert store.keys("workflowsoft.") == []  # every record resolved and deleted
    print(semantics, "rounds", round_no + 1, "yielded", sum(r["yielded_count"] for r in reports))
