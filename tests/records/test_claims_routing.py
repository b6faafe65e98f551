"""The routing rule of a step (``ClaimsLedger.keeps`` / ``pass_on`` / waits), poller by poller, against the
emulator's state (both server readings): what a waiter receives of another process is never lost nor hidden."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.emulator.state import EmulatorState
from airflow_provider_workflowsoft.records.claims import WAITS, ClaimsLedger, process_key
from airflow_provider_workflowsoft.records.stores import MemoryStore

CONN = "workflowsoft_default"
STEP = 11
LEASE = dt.timedelta(minutes=10)
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
SEMANTICS = ["once", "until-completed"]
VENUE = "field_68324e9b_332f_4c36_b71a_c194fe762465"  # the step's required field


def at(moment: dt.datetime) -> Callable[[], dt.datetime]:
    return lambda: moment


def drain(ledger: ClaimsLedger, server: EmulatorState, pid: Any = None, limit: int = 1) -> list[dict[str, Any]]:
    """One check of a poller, the sensor's loop: prepare, then poll, claim what it keeps, pass on the rest."""
    offered, skip = ledger.prepare_drain(STEP, LEASE, limit, process_instance_id=pid)
    d = Drain(limit, taken=offered, skip=skip, keep=ledger.keeps)
    while not d.finished:
        instance = server.poll(STEP)
        if d.offer(instance):
            ledger.claim(STEP, [instance])  # type: ignore[list-item]
        elif d.passed:
            ledger.pass_on(STEP, d.take_passed())
    return d.instances


def complete(server: EmulatorState, ledger: ClaimsLedger, instances: list[dict[str, Any]]) -> None:
    for instance in instances:
        server.update_variables(instance["IntegrationInstanceId"], {VENUE: "V-1"}, "x")
        server.complete(instance["IntegrationInstanceId"], {"Action": "Complete", "CustomAction": "__AUTO__"}, "x")
    ledger.mark_done([i["IntegrationInstanceId"] for i in instances])


@pytest.fixture(params=SEMANTICS)
def server(request: pytest.FixtureRequest) -> EmulatorState:
    return EmulatorState(poll_semantics=request.param)


def test_a_waiter_passes_other_processes_on_and_a_worker_gets_them_at_once(server: EmulatorState) -> None:
    store = MemoryStore()
    other, mine = server.create_instances(STEP, count=2)
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    got = drain(waiter, server, pid=mine["ProcessInstanceId"])
    if server.settings.poll_semantics == "once":
        assert [i["IntegrationInstanceId"] for i in got] == [mine["IntegrationInstanceId"]]
    else:  # the oldest open instance hides the next one until it is completed
        assert got == []
    # The other process's instance is put back, not held: a worker's next drain gets it at once, within the lease.
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    taken = drain(worker, server, limit=10)
    assert [i["IntegrationInstanceId"] for i in taken] == [other["IntegrationInstanceId"]]
    complete(server, worker, taken)
    if server.settings.poll_semantics == "until-completed":
        got = drain(waiter, server, pid=mine["ProcessInstanceId"])
        assert [i["IntegrationInstanceId"] for i in got] == [mine["IntegrationInstanceId"]]


def test_a_worker_leaves_a_waiters_instance_to_it(server: EmulatorState) -> None:
    store = MemoryStore()
    started = server.start_process({"TemplateId": 1}, "1")
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    assert drain(waiter, server, pid=started["Id"]) in ([], [{"IntegrationInstanceId": 5001,
                                                              "ProcessInstanceId": started["Id"]}])
    store.data.clear()  # the same, with the instance arriving after the waiter's first check
    server.reset()
    started = server.start_process({"TemplateId": 3}, "1")  # no step: the process never reaches step 11
    foreign = server.create_instances(STEP, count=1)[0]
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    assert drain(waiter, server, pid=foreign["ProcessInstanceId"] + 100) == []  # waits for a process not there yet
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    assert [i["IntegrationInstanceId"] for i in drain(worker, server, limit=5)] == [foreign["IntegrationInstanceId"]]


def test_the_instance_a_waiter_wants_goes_to_it_through_any_poller(server: EmulatorState) -> None:
    store = MemoryStore()
    wanted = server.create_instances(STEP, count=1)[0]
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    pid = wanted["ProcessInstanceId"]
    waiter.wait_for(STEP, pid, LEASE)  # the waiter is waiting (its first check comes later)
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    assert drain(worker, server, limit=5) == []  # received, not kept: passed on
    assert worker.waits == {str(pid): "d/r1/wait/-1"}
    # Another worker's drain leaves it alone too (it is in its skip list), within the lease or not.
    later = ClaimsLedger(CONN, store, owner="d/r3/work/-1", clock=at(NOW + 2 * LEASE / 3))
    waiter_late = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW + 2 * LEASE / 3))
    waiter_late.wait_for(STEP, pid, LEASE)  # refreshed by the waiter's checks
    assert drain(later, server, limit=5) == []
    got = drain(ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW + 2 * LEASE / 3)), server, pid=pid)
    assert got == [wanted]  # not "reclaimed": no one worked on it before


def test_a_waiter_that_timed_out_leaves_its_instance_to_the_others_at_once() -> None:
    server, store = EmulatorState(), MemoryStore()
    wanted = server.create_instances(STEP, count=1)[0]
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    waiter.wait_for(STEP, wanted["ProcessInstanceId"], LEASE)
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    assert drain(worker, server, limit=5) == []
    waiter.stop_waiting()
    assert WAITS not in (store.get(waiter.key) or {})
    taken = drain(ClaimsLedger(CONN, store, owner="d/r3/work/-1", clock=at(NOW)), server, limit=5)
    assert [i["IntegrationInstanceId"] for i in taken] == [wanted["IntegrationInstanceId"]]


def test_a_killed_waiters_wait_ends_one_lease_after_it_was_last_seen() -> None:
    server, store = EmulatorState(), MemoryStore()
    wanted = server.create_instances(STEP, count=1)[0]
    ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW)).wait_for(STEP, wanted["ProcessInstanceId"], LEASE)
    before = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW + LEASE - dt.timedelta(seconds=1)))
    assert drain(before, server, limit=5) == []  # still wanted: passed on
    after = ClaimsLedger(CONN, store, owner="d/r3/work/-1", clock=at(NOW + LEASE))
    taken = drain(after, server, limit=5)
    assert [i["IntegrationInstanceId"] for i in taken] == [wanted["IntegrationInstanceId"]]


def test_a_waiter_refreshes_its_wait_once_a_third_of_the_lease_has_gone_by() -> None:
    store = MemoryStore()
    writes: list[str] = []
    original = store.set
    store.set = lambda key, value: (writes.append(key), original(key, value))[1]  # type: ignore[method-assign]
    ledger = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    assert ledger.wait_for(STEP, 1001, LEASE) is True
    assert ledger.wait_for(STEP, "1001", LEASE) is False  # the same wait (ids compared as id_value reads them)
    ledger.clock = at(NOW + LEASE / 3)
    assert ledger.wait_for(STEP, 1001, LEASE) is True
    assert len(writes) == 2
    (wait,) = store.get(ledger.key)[WAITS].values()
    assert wait["since"] == NOW.isoformat() and wait["process_instance_id"] == 1001
    with pytest.raises(ValueError, match="process_instance_id"):
        ledger.wait_for(STEP, None, LEASE)


def test_a_closed_waiter_wants_nothing() -> None:
    store = MemoryStore()
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    waiter.wait_for(STEP, 1001, LEASE)
    reader = ClaimsLedger(CONN, store, owner="x", clock=at(NOW))
    assert reader.live_waits(reader.read_all(), STEP, LEASE) == {"1001": "d/r1/wait/-1"}
    assert reader.live_waits(reader.read_all(), 12, LEASE) == {}  # another step
    waiter.close()
    assert reader.live_waits(reader.read_all(), STEP, LEASE) == {}


@pytest.mark.parametrize(("answer", "waiter_keeps", "worker_keeps"), [
    ({"IntegrationInstanceId": 5001, "ProcessInstanceId": None}, False, True),  # no process id: no waiter's
    ({"IntegrationInstanceId": 5001}, False, True),
    ({"IntegrationInstanceId": 5001, "ProcessInstanceId": "1001"}, True, False),  # a numeric string is the id
    ({"IntegrationInstanceId": 5001, "ProcessInstanceId": 1001}, True, False),
    ({"IntegrationInstanceId": 5001, "ProcessInstanceId": 1002}, False, True),
])
def test_what_each_poller_keeps(answer: dict[str, Any], waiter_keeps: bool, worker_keeps: bool) -> None:
    store = MemoryStore()
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    waiter.prepare_drain(STEP, LEASE, 1, process_instance_id="1001")
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    worker.prepare_drain(STEP, LEASE, 1)
    assert waiter.keeps(answer) is waiter_keeps
    assert worker.keeps(answer) is worker_keeps
    assert process_key("1001") == process_key(1001) == "1001" and process_key(None) is None and process_key(" ") is None


def test_passed_on_instances_keep_their_offers_and_need_no_completion_by_the_passer() -> None:
    server, store = EmulatorState(), MemoryStore()
    first = server.create_instances(STEP, count=1)[0]
    waiter = ClaimsLedger(CONN, store, owner="d/r1/wait/-1", clock=at(NOW))
    assert drain(waiter, server, pid=999) == []
    (entry,) = store.get(waiter.key)["claims"].values()
    assert entry["released"] and entry["passed_on"] and entry["offers"] == 0
    worker = ClaimsLedger(CONN, store, owner="d/r2/work/-1", clock=at(NOW))
    taken = drain(worker, server, limit=5)
    complete(server, worker, taken)
    # the waiter's next check drops the resolved entry; nothing stays open anywhere
    assert drain(waiter, server, pid=999) == []
    reader = ClaimsLedger(CONN, store, owner="reader", clock=at(NOW))
    assert [c for c in reader.list_claims(STEP) if c["integration_instance_id"] == first["IntegrationInstanceId"]] == []
