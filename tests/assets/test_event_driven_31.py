"""The asset watcher where Airflow has no Asset state store and its triggerer lists no Variables (Airflow 3.1).

The watcher's trigger against the emulator over loopback, as in test_event_driven.py, with its records where 3.1 keeps
them: its own record a Variable (the key it has in the Asset's state store on 3.3), each event naming an ack slot that
the run taking it over mirrors its claims into. Runs on every venv (the 3.1 form is forced on 3.3); under Airflow
3.1.8's real scheduler and triggerer: tests/deployment/test_embedded_airflow31.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from airflow_provider_workflowsoft.assets.workflowsoft import instances_from_events
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.triggers import workflowsoft as triggers
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from tests.assets.test_event_driven import events_of, ids

CONN = "workflowsoft_default"
URI = "workflowsoft://workflowsoft_default/integration-steps/11"
OWNER = naming.watcher_owner(URI)
RECORD = naming.claims_key(CONN, OWNER)  # the same key as in the Asset's state store on 3.3
ACKS = naming.ack_prefix(CONN)


@pytest.fixture(autouse=True)
def airflow_31(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3.1 form, whatever Airflow runs the test: no Asset state store (and sync_to_async for the records)."""
    monkeypatch.setattr(triggers, "AIRFLOW_V_3_3_PLUS", False)


def watcher(variables: MemoryStore, **kwargs: Any) -> triggers.WorkflowsoftIntegrationEventTrigger:
    trigger = triggers.WorkflowsoftIntegrationEventTrigger(
        **{"integration_step_id": 11, "max_instances": 3, "poll_interval": 0.01, "reclaim_after": 60,
           "asset_uri": URI, **kwargs})
    trigger.claims_store = variables  # the Airflow Variables; no own_store: the triggerer gives no Asset state store
    return trigger


def record(variables: MemoryStore) -> dict[str, Any]:
    return variables.get(RECORD) or {}


def slots(variables: MemoryStore) -> list[str]:
    return variables.keys(ACKS)


def take_over(variables: MemoryStore, run: str, instances: list[dict[str, Any]]) -> ClaimsLedger:
    """What the run's batch worker given ``instances_from_events(...)`` does first: claim them in its own record."""
    ledger = ClaimsLedger(CONN, variables, owner=f"dag/{run}/complete/-1")
    ledger.claim(11, [{**i, "shared": True} for i in instances])
    return ledger


def age(variables: MemoryStore, seconds: float) -> None:
    """The watcher's claims were made ``seconds`` ago (the lease passes)."""
    mine = record(variables)
    for claim in mine["claims"].values():
        claim["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).isoformat()
    variables.set(RECORD, mine)


def test_the_record_is_a_variable_and_each_event_names_its_ack_slot(emu) -> None:
    variables = MemoryStore()
    emu.create_instances(11, count=4)
    (first,) = events_of(watcher(variables), 1)
    assert ids(first["instances"]) == [5001, 5002, 5003]
    (ack,) = {i["ack"] for i in first["instances"]}  # one slot per event, in each instance
    assert ack.startswith(ACKS) and not ack.startswith(naming.claims_prefix(CONN))  # no lister reads it as a record
    claims = record(variables)["claims"]
    assert sorted(claims) == ["5001", "5002", "5003"] and {c["ack"] for c in claims.values()} == {ack}
    assert slots(variables) == []  # the watcher only reads slots: the run writes them


def test_a_burst_goes_out_one_event_per_run_through_the_ack_slots(emu) -> None:
    """The watcher cannot list the runs' records: it sees a run take its event through the slot the event named."""
    variables = MemoryStore()
    emu.create_instances(11, count=7)
    trigger = watcher(variables)
    fired: list[dict[str, Any]] = []
    taken: list[list[Any]] = []

    async def go() -> None:
        sleeps = 0

        async def sleep(_seconds: float) -> None:
            nonlocal sleeps
            sleeps += 1
            assert len(fired) - len(taken) <= 1, "a second event was fired before a run took the first"
            if fired and len(taken) < len(fired) and sleeps % 3 == 0:  # a run takes the event a few checks later
                take_over(variables, f"run{len(taken)}", instances_from_events([{"extra": {"payload": fired[-1]}}]))
                taken.append(ids(fired[-1]["instances"]))
            if sleeps > 40:
                raise asyncio.CancelledError
            await asyncio.sleep(0)

        trigger.sleep = sleep
        agen = trigger.run()
        try:
            while True:
                fired.append((await asyncio.wait_for(agen.__anext__(), 30)).payload)
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        finally:
            await agen.aclose()

    asyncio.run(go())
    assert [ids(e["instances"]) for e in fired] == [[5001, 5002, 5003], [5004, 5005, 5006], [5007]]
    assert taken == [ids(e["instances"]) for e in fired]
    assert len({e["instances"][0]["ack"] for e in fired}) == 3 == len(slots(variables))  # a slot per event


def test_completions_reach_the_watcher_through_the_slot_and_the_slot_goes(emu, emu_client) -> None:
    """The real worker engine given the event's instances: its claims, done marks and close are mirrored into the
    slot; the watcher resolves its claims from there and deletes the slot and its emptied record."""
    variables = MemoryStore()
    emu.create_instances(11, count=2)
    (event,) = events_of(watcher(variables), 1)
    worker = ClaimsLedger(CONN, variables, owner="dag/run1/complete/-1")
    report = WorkerEngine(emu_client, lambda fields, instance: {"Venue code": "V"}, integration_step_id=11,
                         claims=worker).run(instances_from_events([{"extra": {"payload": event}}]))
    assert report["succeeded_count"] == 2
    (slot,) = slots(variables)
    assert slot == event["instances"][0]["ack"]
    assert sorted(variables.get(slot)["done"]) == ["5001", "5002"] and variables.get(slot)["closed"]
    assert events_of(watcher(variables), 1, max_sleeps=3) == []  # nothing handed out again
    assert record(variables) == {} and slots(variables) == []  # resolved: the record and the slot are gone


def test_an_event_nobody_takes_comes_back_after_the_lease_with_a_new_slot(emu) -> None:
    variables = MemoryStore()
    emu.create_instances(11, count=4)
    (first,) = events_of(watcher(variables), 1)
    assert events_of(watcher(variables), 1, max_sleeps=5) == []  # restarted: still waits for a run
    age(variables, 61)
    (again,) = events_of(watcher(variables), 1)
    assert ids(again["instances"]) == ids(first["instances"]) and all(i["reclaimed"] for i in again["instances"])
    assert again["instances"][0]["ack"] != first["instances"][0]["ack"]
    # A late run of the first event and a run of the second in one: the batch worker names the newest slot.
    late = instances_from_events([{"extra": {"payload": first}, "timestamp": "1"},
                                  {"extra": {"payload": again}, "timestamp": "2"}])
    assert {i["ack"] for i in late} == {again["instances"][0]["ack"]}


def test_a_run_that_took_the_event_and_died_is_re_offered_after_its_lease(emu) -> None:
    """The slot shows the run's claim: the watcher leaves it alone within the run's lease, then hands it out again."""
    variables = MemoryStore()
    emu.create_instances(11, count=1)
    (first,) = events_of(watcher(variables), 1)
    run = take_over(variables, "run1", instances_from_events([{"extra": {"payload": first}}]))
    assert events_of(watcher(variables), 1, max_sleeps=3) == []  # taken, within its lease
    run.renew()  # a live run renews: mirrored too
    assert "renewed_at" in variables.get(first["instances"][0]["ack"])["claims"]["5001"]
    age(variables, 61)
    slot = variables.get(first["instances"][0]["ack"])
    slot["claims"]["5001"]["claimed_at"] = slot["claims"]["5001"]["renewed_at"] = (
        dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
    variables.set(first["instances"][0]["ack"], slot)  # the run died a lease ago
    (again,) = events_of(watcher(variables), 1)
    assert ids(again["instances"]) == [5001] and again["instances"][0]["reclaimed"]


def test_restarted_watcher_does_not_hand_out_an_instance_twice(emu) -> None:
    emu.update_settings(poll_semantics="until-completed")
    variables = MemoryStore()
    emu.create_instances(11, count=2)
    (first,) = events_of(watcher(variables), 1)
    assert ids(first["instances"]) == [5001]
    assert events_of(watcher(variables), 1, max_sleeps=3) == []
    take_over(variables, "run1", instances_from_events([{"extra": {"payload": first}}]))
    assert events_of(watcher(variables), 1, max_sleeps=3) == []  # the server still hands 5001 out: held


def test_other_readers_leave_the_watchers_record_alone() -> None:
    """On 3.1 the watcher's record is among the Variables. Other pollers of the connection neither tidy it (a watcher
    idle for a lease is not dead) nor take its claims over (its runs hold them): the watcher alone offers them
    again, as on 3.3 where they cannot see it."""
    variables = MemoryStore()
    lease = dt.timedelta(seconds=60)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    watcher_ledger = ClaimsLedger(CONN, variables, owner=OWNER, clock=lambda: old)
    watcher_ledger.claim(11, [{"IntegrationInstanceId": 7001}])
    watcher_ledger.park([7001])
    watcher_ledger.claim(11, [{"IntegrationInstanceId": 7002}])
    before = record(variables)
    sensor = ClaimsLedger(CONN, variables, owner="dag/run9/wait/-1")
    offered, skip = sensor.prepare_drain(11, lease, 10)
    assert offered == [] and 7002 in skip and 7001 in skip
    ClaimsLedger(CONN, variables, owner="dag/run9/other/-1").prepare_drain(12, lease, 10)  # another step's reader
    assert record(variables) == before  # not carried away, not rewritten


def test_a_completion_operators_done_mark_reaches_the_watcher_through_the_slot(emu) -> None:
    """A mapped completion given an event's instance claims nothing: its done mark names the event's slot."""
    variables = MemoryStore()
    emu.create_instances(11, count=1)
    (event,) = events_of(watcher(variables), 1)
    (instance,) = instances_from_events([{"extra": {"payload": event}}])
    completion = ClaimsLedger(CONN, variables, owner="dag/run1/complete/0")
    completion.mark_done([instance["IntegrationInstanceId"]], write=False, ack=instance["ack"])
    completion.close()
    assert events_of(watcher(variables), 1, max_sleeps=3) == []
    assert record(variables) == {} and slots(variables) == []
