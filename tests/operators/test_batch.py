"""The batch worker operator against the emulator over loopback: outcomes, partial failure, concurrency
bound, requests per instance, one token, connection reuse."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.worker.engine import WorkerEngine, normalise_instances
from tests.conftest import FakeTI

STEP = 11
CONN = "ws_batch"
DAG_ID, RUN_ID, TASK_ID = "batch_dag", "manual__2026-01-01T00:00:00+00:00", "work"


@pytest.fixture
def conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token"}))
    return CONN


@pytest.fixture
def admin_conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    login, password = emulator.admin_credentials
    monkeypatch.setenv("AIRFLOW_CONN_WS_ADMIN", json.dumps(
        {"conn_type": "workflowsoft", "host": emulator.base_url, "login": login, "password": password}))
    return "ws_admin"


OWNER = naming.owner_name(DAG_ID, RUN_ID, TASK_ID, -1)


def open_claims(conn_id: str, store: MemoryStore) -> set[Any]:
    """The instances some run received and has not completed (what a later run would offer again)."""
    return {c["integration_instance_id"] for c in ClaimsLedger(conn_id, store, owner="reader").list_claims()}


def enrich(fields: dict[str, Any], instance: dict[str, Any], venue: str = "V") -> dict[str, Any]:
    return {"Venue code": f"{venue}-{instance['IntegrationInstanceId']}", "Attendees": 42, "Event exists": True}


def run(op: WorkflowsoftIntegrationWorkerOperator) -> tuple[dict[str, Any] | None, FakeTI, BaseException | None]:
    ti = FakeTI(TASK_ID, dag_id=DAG_ID, run_id=RUN_ID)
    try:
        return op.execute({"ti": ti}), ti, None  # type: ignore[arg-type]
    except Exception as exc:
        return None, ti, exc


def make_op(conn_id: str, store: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationWorkerOperator:
    kwargs.setdefault("python_callable", enrich)
    kwargs.setdefault("integration_step_id", STEP)
    return WorkflowsoftIntegrationWorkerOperator(task_id=TASK_ID, workflowsoft_conn_id=conn_id, ledger_store=store,
                                                 **kwargs)


def instance_view(emulator: EmulatorServer) -> dict[int, dict[str, Any]]:
    return {i["IntegrationInstanceId"]: i for i in emulator.snapshot()["instances"]}


def test_every_instance_is_written_and_completed(emulator: EmulatorServer, conn: str) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=12)]
    store = MemoryStore()
    report, _, error = run(make_op(conn, store, op_kwargs={"venue": "HALL"}, max_workers=4))
    assert error is None
    assert report is not None
    assert report["processed"] == 12 and sorted(report["succeeded"]) == sorted(created) and report["failed"] == []
    json.dumps(report)  # JSON-safe
    views = instance_view(emulator)
    assert open_claims(conn, store) == set()  # nothing left to offer again
    assert store.keys(naming.claims_prefix(conn)) == []  # and no record left behind
    for iid in created:
        assert views[iid]["status"] == "completed"
        assert views[iid]["fields"]["Venue code"] == f"HALL-{iid}"
        assert views[iid]["fields"]["Attendees"] == 42
        assert report["results"][str(iid)]["Venue code"] == f"HALL-{iid}"


def test_callable_gets_typed_fields_and_none_completes_without_writing(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=2, values={"Venue code": "FIXED"})
    seen: list[dict[str, Any]] = []

    def only_complete(fields: dict[str, Any]) -> None:  # no instance parameter: called without it
        seen.append(fields)

    report, _, error = run(make_op(conn, MemoryStore(), python_callable=only_complete))
    assert error is None and report is not None and report["processed"] == 2
    assert isinstance(seen[0]["Event start"], dt.datetime) and seen[0]["Event name"] == "Event Test"
    writes = [r for r in emulator.request_log() if r["method"] == "POST"]
    assert writes == []
    assert all(v["status"] == "completed" for v in instance_view(emulator).values())


def test_partial_failure_names_failed_ids_and_leaves_them_claimed(emulator: EmulatorServer, conn: str) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=6)]
    bad = set(created[1::2])

    def sometimes(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        if instance["IntegrationInstanceId"] in bad:
            raise RuntimeError("venue lookup failed")
        return {"Venue code": "OK"}

    store = MemoryStore()
    _report, ti, error = run(make_op(conn, store, python_callable=sometimes))
    assert error is not None
    for iid in bad:
        assert str(iid) in str(error)
    pushed = ti.xcom["return_value"]
    assert {f["IntegrationInstanceId"] for f in pushed["failed"]} == bad
    assert all("venue lookup failed" in f["error"] for f in pushed["failed"])
    assert sorted(pushed["succeeded"]) == sorted(set(created) - bad)
    views = instance_view(emulator)
    assert open_claims(conn, store) == bad  # the failed ones stay claimed, the others are done
    for iid in created:
        assert views[iid]["status"] == ("handed_out" if iid in bad else "completed")
    # A later run re-offers exactly the failed ones (lease 0) and completes them.
    report2, _, error2 = run(make_op(conn, store, reclaim_after=dt.timedelta(0)))
    assert error2 is None and report2 is not None and sorted(report2["succeeded"]) == sorted(bad)
    assert all(v["status"] == "completed" for v in instance_view(emulator).values())


def test_bad_return_value_and_invalid_values_fail_only_that_instance(emulator: EmulatorServer, conn: str) -> None:
    created = [i["IntegrationInstanceId"] for i in emulator.create_instances(STEP, count=3)]

    def odd(fields: dict[str, Any], instance: dict[str, Any]) -> Any:
        iid = instance["IntegrationInstanceId"]
        if iid == created[0]:
            return ["not", "a", "dict"]
        if iid == created[1]:
            return {"Category": "Party"}  # not an option; Venue code also missing
        return {"Venue code": "X"}

    _report, ti, error = run(make_op(conn, MemoryStore(), python_callable=odd))
    assert error is not None
    failed = {f["IntegrationInstanceId"]: f["error"] for f in ti.xcom["return_value"]["failed"]}
    assert set(failed) == {created[0], created[1]}
    assert "dict" in failed[created[0]] and "Category" in failed[created[1]]
    assert instance_view(emulator)[created[2]]["status"] == "completed"


def test_concurrency_bound_is_honoured(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=24)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return {"Venue code": "C"}

    report, _, error = run(make_op(conn, MemoryStore(), python_callable=slow, max_workers=3))
    assert error is None and report is not None and report["processed"] == 24
    assert state["max"] == 3


def test_default_pollers_keep_requests_near_four_per_instance(emulator: EmulatorServer, conn: str) -> None:
    n = 40
    emulator.create_instances(STEP, count=n)
    report, _, error = run(make_op(conn, MemoryStore(), max_workers=8, max_instances=1000))
    assert error is None and report is not None and report["processed"] == n
    log = emulator.request_log()
    polls = [e for e in log if e["path"].endswith("new-integrations")]
    # pollers default to max_workers: each of the 8 pollers ends its drain with one empty answer
    assert n + 1 <= len(polls) <= n + 8
    assert len(log) - len(polls) == 3 * n  # read, write, complete
    assert len({e["client"] for e in log}) <= 8 + 8 < len(log) / 5


def test_at_most_four_requests_per_instance_and_connections_reused(emulator: EmulatorServer, conn: str) -> None:
    n = 40
    emulator.create_instances(STEP, count=n)
    report, _, error = run(make_op(conn, MemoryStore(), max_workers=8, pollers=1, max_instances=1000))
    assert error is None and report is not None and report["processed"] == n
    log = emulator.request_log()
    per_instance: dict[int, int] = {}
    for entry in log:
        for part in entry["path"].split("/"):
            if part.isdigit() and "tasks" in entry["path"]:
                per_instance[int(part)] = per_instance.get(int(part), 0) + 1
        if entry["method"] == "POST" and isinstance(entry["body"], dict):
            per_instance[entry["body"]["TaskId"]] = per_instance.get(entry["body"]["TaskId"], 0) + 1
    polls = [e for e in log if e["path"].endswith("new-integrations")]
    assert len(polls) == n + 1  # one per instance, plus the empty answer that ends the drain
    assert all(count == 3 for count in per_instance.values()) and len(per_instance) == n  # read, write, complete
    assert len(log) <= 4 * n + 1
    clients = {e["client"] for e in log}
    assert len(clients) <= 8 + 1 < len(log) / 10


def test_one_token_is_minted_for_many_instances(emulator: EmulatorServer, admin_conn: str) -> None:
    from airflow_provider_workflowsoft.api import protocol

    protocol.TOKEN_CACHE.clear()
    emulator.create_instances(STEP, count=30)
    report, _, error = run(make_op(admin_conn, MemoryStore(), max_workers=8))
    assert error is None and report is not None and report["processed"] == 30
    mints = [e for e in emulator.request_log() if e["path"].endswith("apitoken")]
    assert len(mints) == 1
    assert emulator.snapshot()["tokens"]["minted_active"] == 1
    protocol.TOKEN_CACHE.clear()


def test_max_instances_limits_the_drain(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=10)
    report, _, error = run(make_op(conn, MemoryStore(), max_instances=4))
    assert error is None and report is not None and report["processed"] == 4
    statuses = [v["status"] for v in instance_view(emulator).values()]
    assert statuses.count("completed") == 4 and statuses.count("new") == 6


def test_drain_stops_on_a_repeated_instance(emulator: EmulatorServer, conn: str) -> None:
    emulator.update_settings(poll_semantics="until-completed")
    emulator.create_instances(STEP, count=3)
    report, _, error = run(make_op(conn, MemoryStore(), max_workers=1))
    assert error is None and report is not None
    assert 1 <= report["processed"] <= 3  # never loops on the same instance


def test_given_instances_skip_done_and_accept_ids_or_dicts(emulator: EmulatorServer, conn: str) -> None:
    created = emulator.create_instances(STEP, count=3)
    store = MemoryStore()
    # An earlier try of this task instance completed the first one
    first, _, first_error = run(make_op(conn, store, integration_step_id=None, instances=created[:1]))
    assert first_error is None and first is not None and first["succeeded"] == [created[0]["IntegrationInstanceId"]]
    emulator.clear_request_log()
    given = [created[0], str(created[1]["IntegrationInstanceId"]), created[2]["IntegrationInstanceId"]]
    report, _, error = run(make_op(conn, store, integration_step_id=None, instances=given))
    assert error is None and report is not None
    assert report["skipped"] == [created[0]["IntegrationInstanceId"]]
    assert sorted(report["succeeded"]) == sorted(i["IntegrationInstanceId"] for i in created[1:])
    assert not [e for e in emulator.request_log() if e["path"].endswith("new-integrations")]


def test_step_found_by_names(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=2)
    op = make_op(conn, MemoryStore(), integration_step_id=None, process_diagram_name="Event registration",
                 integration_step_name="Enrich event")
    report, _, error = run(op)
    assert error is None and report is not None and report["processed"] == 2


def test_failure_creates_one_task_for_a_person(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=2)

    def fail(fields: dict[str, Any]) -> None:
        raise ValueError("no venue")

    store = MemoryStore()
    notify = {"title": "Enrichment failed", "assignee": "jane.roe@example.com", "description": "Please check."}
    for _ in range(2):  # a retry of the same task instance does not create a second task
        _, ti, error = run(make_op(conn, store, python_callable=fail, notify_on_failure=notify,
                                   reclaim_after=dt.timedelta(0)))
        assert error is not None
    tasks = emulator.snapshot()["tasks"]
    assert len(tasks) == 1
    assert tasks[0]["title"] == "Enrichment failed" and "no venue" in tasks[0]["description"]
    assert tasks[0]["assigned_user_id"] == 2
    assert ti.xcom["return_value"]["notification"]["Id"] == tasks[0]["id"]


def test_poll_error_fails_the_task_after_processing_what_was_received(emulator: EmulatorServer, conn: str) -> None:
    emulator.create_instances(STEP, count=3)
    op = make_op(conn, MemoryStore())
    hook = op.hook
    calls = {"n": 0}
    real_poll = hook.poll_new_integration

    def flaky_poll(step: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real_poll(step)

    hook.poll_new_integration = flaky_poll  # type: ignore[method-assign]
    engine = WorkerEngine(hook, enrich, integration_step_id=STEP, claims=ClaimsLedger(conn, MemoryStore()))
    report = engine.run()
    assert report["processed"] == 2 and "boom" in report["poll_error"]


def test_normalise_instances() -> None:
    assert normalise_instances(None) == []
    assert normalise_instances("[1, 2, 2]") == [{"IntegrationInstanceId": 1}, {"IntegrationInstanceId": 2}]
    assert normalise_instances([{"IntegrationInstanceId": "7", "ProcessInstanceId": 3}]) == [
        {"IntegrationInstanceId": 7, "ProcessInstanceId": 3}]
    with pytest.raises(ValueError):
        normalise_instances([{"ProcessInstanceId": 3}])


def test_operator_requires_a_source() -> None:
    # The one StepRef check: the input error every other class raises, naming the arguments.
    with pytest.raises(WorkflowsoftInputError, match="integration_step_id, or process_diagram_name and"):
        WorkflowsoftIntegrationWorkerOperator(task_id="x", python_callable=enrich)
    with pytest.raises(WorkflowsoftInputError, match="integration_step_name=None"):
        WorkflowsoftIntegrationWorkerOperator(task_id="y", python_callable=enrich, process_diagram_name="Events")


def test_one_definition_of_the_claim_states() -> None:
    # The 0.1 module hands on the records' own names (with a deprecation warning), and the operators
    # use the same state names as the ledger.
    import importlib
    import sys

    from airflow_provider_workflowsoft.operators import workflowsoft as operators
    from airflow_provider_workflowsoft.records import claims

    sys.modules.pop("airflow_provider_workflowsoft.ledger", None)
    with pytest.warns(DeprecationWarning, match="records"):
        ledger = importlib.import_module("airflow_provider_workflowsoft.ledger")
    assert ledger.ClaimsLedger is claims.ClaimsLedger
    assert (ledger.CLAIMED, ledger.DONE) == (claims.CLAIMED, claims.DONE) == ("claimed", "done")
    assert operators.DONE is claims.DONE


def test_a_failing_claim_stops_the_drain_but_the_received_instance_is_processed(
    emulator: EmulatorServer, conn: str
) -> None:
    emulator.create_instances(STEP, count=20)

    class BrokenStore(MemoryStore):
        def set(self, key: str, value: Any) -> None:
            if key.startswith(naming.claims_prefix(CONN)) and value.get("claims"):
                raise RuntimeError("variable store down")
            super().set(key, value)

    op = make_op(conn, BrokenStore())
    _, ti, error = run(op)
    assert error is not None and "variable store down" in str(error)
    pushed = ti.xcom["return_value"]
    statuses = [v["status"] for v in instance_view(emulator).values()]
    received = len(statuses) - statuses.count("new")
    # Polling stops at the first failed claim write (group commit): what that write carried (at most one
    # answer per poller) plus at most one poll in flight per poller (8 pollers by default).
    assert 1 <= received <= 2 * 8
    assert pushed["processed"] == received and len(pushed["succeeded"]) == received
    assert statuses.count("completed") == received


def readme_report_keys() -> tuple[set[str], set[str]]:
    """The README's report table: (keys present in every run, keys present only when their row says)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("**The report**"):]
    table = table[:table.index("\n\n", table.index("| Key |"))]
    always: set[str] = set()
    sometimes: set[str] = set()
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        keys_cell, what = row.split(" | ", 1)
        keys = set(re.findall(r"`([a-z_]+)`", keys_cell))
        (sometimes if what.startswith("only ") else always).update(keys)
    return always, sometimes


def test_the_readme_report_table_names_every_key_of_a_run(emulator: EmulatorServer, conn: str) -> None:
    """A user reads the XCom's keys from the README: a plain draining run holds exactly its "every run" keys (plus
    ``max_offers``, which only a draining run has), and a stopped or failed run's extra keys are its "only" rows."""
    emulator.create_instances(STEP, count=3)
    report, _, error = run(make_op(conn, MemoryStore()))
    assert error is None and report is not None
    always, sometimes = readme_report_keys()
    assert set(report) == always, (set(report) - always, always - set(report))
    assert {"stopped", "handed_back", "handed_back_count", "in_flight_at_stop", "poll_error", "interrupted_polls",
            "full_report"} == sometimes
