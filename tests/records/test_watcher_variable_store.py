"""``WatcherVariableStore``: an asset watcher's listing where its triggerer lists no Variables (Airflow 3.1), and the
mirror a run writes into the ack slots its claims name."""

from __future__ import annotations

from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore, WatcherVariableStore

CONN = "c"
WATCHER = naming.watcher_owner("workflowsoft://c/integration-steps/11")
KEY = naming.claims_key(CONN, WATCHER)


def test_the_listing_is_the_slots_the_watchers_record_names() -> None:
    variables = MemoryStore()
    store = WatcherVariableStore(variables, KEY)
    assert store.keys(naming.claims_prefix(CONN)) == []  # no record yet
    one, two = naming.ack_key(CONN, WATCHER, "e1"), naming.ack_key(CONN, WATCHER, "e2")
    assert one.startswith(naming.ack_prefix(CONN)) and one != two
    ClaimsLedger(CONN, store, owner=WATCHER, own_store=variables, ack=one).claim(11, [{"IntegrationInstanceId": 1}])
    ClaimsLedger(CONN, store, owner=WATCHER, own_store=variables, ack=two).claim(11, [{"IntegrationInstanceId": 2}])
    variables.set("workflowsoft.claims.c.dag.task.-1.abc", {"claims": {"3": {"ack": "x"}}})  # not the watcher's
    assert store.keys("anything") == sorted([one, two])
    assert variables.keys(naming.ack_prefix(CONN)) == []  # the watcher writes no slot


def test_a_run_mirrors_its_claims_and_marks_into_the_slot_and_deletes_it_when_empty() -> None:
    variables = MemoryStore()
    slot = naming.ack_key(CONN, WATCHER, "e1")
    run = ClaimsLedger(CONN, variables, owner="dag/r1/complete/-1")
    run.claim(11, [{"IntegrationInstanceId": 1, "ack": slot, "shared": True},
                   {"IntegrationInstanceId": 2, "ack": slot, "shared": True},
                   {"IntegrationInstanceId": 3}])  # not from an event: no slot
    mirror = variables.get(slot)
    assert sorted(mirror["claims"]) == ["1", "2"] and mirror["owner"] == "dag/r1/complete/-1"
    run.mark_done([1])
    assert sorted(variables.get(slot)["done"]) == ["1"] and sorted(variables.get(slot)["claims"]) == ["2"]
    run.hand_back([2])
    assert variables.get(slot)["claims"]["2"]["released"]
    run.forget([1, 2])
    run.mark_done([3])
    run._own()["done"].clear()  # nothing of the slot left in the run's record
    run.close()
    assert variables.get(slot) is None
