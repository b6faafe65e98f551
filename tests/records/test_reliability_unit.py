"""Never lose or duplicate work, at unit level: idempotent completion, the create ledger's paths, claims
leases and release. Records in a ``MemoryStore``; HTTP through requests-mock."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module

from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftBadRequestError,
    WorkflowsoftConflictError,
    WorkflowsoftConnectionError,
    WorkflowsoftTransientError,
    WorkflowsoftUnknownOutcomeError,
    WorkflowsoftValidationError,
)
from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook
from airflow_provider_workflowsoft.operators.workflowsoft import (
    WorkflowsoftClaimsOperator,
    WorkflowsoftCompleteStepOperator,
    WorkflowsoftCreateTaskOperator,
    WorkflowsoftListClaimsOperator,
    WorkflowsoftReleaseClaimsOperator,
)
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import CLAIMED, DONE, ClaimsLedger
from airflow_provider_workflowsoft.records.creates import SENDING, CreateLedger, DuplicateRiskError
from airflow_provider_workflowsoft.records.stores import MemoryStore, VariableStore
from tests.conftest import fails_without_retries, fake_context

BASE = "https://api.workflowsoft.com"
TOKEN = "tok-unit-reliability"
IID = 42
ACTION = f"{BASE}/api/v2/tasks/{IID}/action"
FIELDS = f"{BASE}/api/v2/workflows/instances/tasks/{IID}/variables"
UPDATE = f"{BASE}/api/v2/workflows/instances/variables"
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
VENUE_KEY = "68324e9b-332f-4c36-b71a-c194fe762465"
ALREADY = {"Message": f"Integration instance {IID} is already completed"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(autouse=True)
def _connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT", json.dumps({"conn_type": "workflowsoft", "host": BASE, "password": TOKEN})
    )


class VariableLikeStore(MemoryStore):
    """In memory, described to users like the Airflow Variables it stands for."""

    describe = VariableStore.describe


@pytest.fixture
def store() -> VariableLikeStore:
    return VariableLikeStore()


def fields(venue: str | None = None) -> list[dict[str, Any]]:
    return [
        {"label": "Venue code", "type": "String", "key": VENUE_KEY, "options": None,
         "valueJson": json.dumps(venue), "isReadonly": False, "isRequired": True},
    ]  # fmt: skip


def complete_operator(store: MemoryStore, **kwargs: Any) -> WorkflowsoftCompleteStepOperator:
    op = WorkflowsoftCompleteStepOperator(task_id="complete", integration_instance_id=IID, ledger_store=store, **kwargs)
    op._hook = WorkflowsoftHook(client_kwargs={"sleep": lambda seconds: None})  # no real waits between retries
    return op


def sent(rm: requests_mock_module.Mocker) -> list[str]:
    return [f"{r.method} {r.path}" for r in rm.request_history]


CONN = "workflowsoft_default"


def ctx(try_number: int = 1) -> dict[str, Any]:
    """The completing task instance's context."""
    return fake_context("complete", run_id="manual__1", try_number=try_number)


#: the owner of the completing task instance's records
COMPLETER = naming.owner_from_context(ctx())


def own_state(store: MemoryStore, owner: str = COMPLETER) -> str | None:
    """What a later try of that task instance reads back from the store (a fresh ledger, no memory)."""
    return ClaimsLedger(CONN, store, owner=owner).own_state(IID)


# ---------------------------------------------------------------------------------------------------
# Idempotent completion
# ---------------------------------------------------------------------------------------------------


def test_recorded_done_instance_answered_already_completed_is_success(rm: Any, store: MemoryStore) -> None:
    # An earlier try of this task instance completed it and recorded it done, then failed later on.
    earlier = ClaimsLedger(CONN, store, owner=COMPLETER)
    earlier.mark_done({IID: {"IntegrationInstanceId": IID, "completed": True}})
    earlier.close()
    rm.patch(ACTION, status_code=409, json=ALREADY)

    result = complete_operator(store, fields={"Venue code": "HALL-A"}).execute(ctx())

    assert result["completed"] is True and result["already_completed"] is True
    assert sent(rm) == [f"PATCH /api/v2/tasks/{IID}/action"]  # no read, no second write
    assert own_state(store) == DONE


def test_retry_takes_already_completed_as_success(rm: Any, store: MemoryStore) -> None:
    # An earlier try sent the completion and lost the answer before recording it: this is try 2.
    ClaimsLedger(CONN, store, owner="dag/run/sensor/-1").claim(11, [{"IntegrationInstanceId": IID,
                                                                     "ProcessInstanceId": 7}])
    rm.get(FIELDS, json=fields("HALL-A"))
    rm.post(UPDATE, status_code=409, json=ALREADY)  # a completed instance refuses writes
    rm.patch(ACTION, status_code=409, json=ALREADY)

    result = complete_operator(store, fields={"Venue code": "HALL-A"}).execute(ctx(try_number=2))

    assert result["completed"] is True and result["already_completed"] is True
    assert own_state(store) == DONE
    assert ClaimsLedger(CONN, store, owner="reader").list_claims(11) == []  # the sensor's claim is resolved


def test_lost_completion_answer_then_already_completed_is_success(rm: Any, store: MemoryStore) -> None:
    rm.get(FIELDS, json=fields())
    rm.post(UPDATE, json=fields("HALL-A"))
    rm.patch(ACTION, [{"exc": requests.exceptions.ConnectionError("Remote end closed connection")},
                      {"status_code": 409, "json": ALREADY}])  # fmt: skip

    result = complete_operator(store, fields={"Venue code": "HALL-A"}).execute(ctx())

    assert result["completed"] is True and result["already_completed"] is True
    assert sent(rm).count(f"PATCH /api/v2/tasks/{IID}/action") == 2
    assert own_state(store) == DONE


def test_already_completed_without_any_earlier_try_is_a_failure(rm: Any, store: MemoryStore) -> None:
    # Nothing says this package completed it: someone else did, which the task must not hide.
    rm.get(FIELDS, json=fields("HALL-A"))
    rm.patch(ACTION, status_code=409, json=ALREADY)

    with fails_without_retries(WorkflowsoftConflictError, match="already completed"):
        complete_operator(store).execute(ctx())
    assert own_state(store) is None  # not recorded as done


def test_invalid_values_send_nothing_and_leave_the_claim(rm: Any, store: MemoryStore) -> None:
    ClaimsLedger(CONN, store, owner="dag/run/sensor/-1").claim(11, [{"IntegrationInstanceId": IID,
                                                                     "ProcessInstanceId": 7}])
    rm.get(FIELDS, json=fields())

    with fails_without_retries(WorkflowsoftValidationError, match="Venue code"):
        complete_operator(store).execute(ctx())  # required field left empty
    assert sent(rm) == [f"GET /api/v2/workflows/instances/tasks/{IID}/variables"]
    listed = ClaimsLedger(CONN, store, owner="reader").list_claims(11)
    assert [(c["integration_instance_id"], c["state"]) for c in listed] == [(IID, CLAIMED)]  # offered again later


# ---------------------------------------------------------------------------------------------------
# Create ledger
# ---------------------------------------------------------------------------------------------------

KEY = naming.create_key(naming.owner_name("dag", "manual__2026-01-01T00:00:00+00:00", "create", 3))


class Sender:
    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return dict(outcome)


def test_idempotency_key_is_a_safe_variable_name() -> None:
    assert KEY == "workflowsoft.create.dag.manual__2026-01-01T00_00_00_00_00.create.3"


def test_known_success_returns_the_recorded_result_without_sending(store: MemoryStore) -> None:
    creates = CreateLedger(store=store)
    first = Sender({"Id": 9001, "Title": "Call"})
    assert creates.run_once(KEY, first, what="the task 'Call'") == {"Id": 9001, "Title": "Call"}
    again = Sender(AssertionError("must not be sent"))
    assert creates.run_once(KEY, again, what="the task 'Call'") == {"Id": 9001, "Title": "Call"}
    assert (first.calls, again.calls) == (1, 0)
    assert store.get(KEY)["state"] == "done"


def test_unknown_outcome_is_a_duplicate_risk_with_guidance(store: MemoryStore) -> None:
    creates = CreateLedger(store=store)
    lost = Sender(WorkflowsoftUnknownOutcomeError("POST", "/api/v2/tasks", "Remote end closed connection"))
    with pytest.raises(DuplicateRiskError) as first:
        creates.run_once(KEY, lost, what="the task 'Call'")
    message = str(first.value)
    assert "may have acted on it" in message
    assert "Check in Workflowsoft whether the task 'Call' exists" in message
    assert f"airflow variables delete {KEY}" in message and "allow_duplicates=True" in message
    assert message.count("not sent again") == 1
    assert store.get(KEY)["state"] == SENDING

    retry = Sender(AssertionError("must not be sent"))
    with pytest.raises(DuplicateRiskError, match="An earlier try of this task sent the task 'Call'"):
        creates.run_once(KEY, retry, what="the task 'Call'")
    assert retry.calls == 0
    # The guidance works: after checking by hand, forgetting the record lets the next try send.
    creates.forget(KEY)
    assert creates.run_once(KEY, Sender({"Id": 1}), what="the task 'Call'") == {"Id": 1}


def test_allow_duplicates_resends(store: MemoryStore) -> None:
    creates = CreateLedger(store=store)
    with pytest.raises(DuplicateRiskError):
        creates.run_once(KEY, Sender(WorkflowsoftUnknownOutcomeError("POST", "/p", "x")), what="w")
    resend = Sender({"Id": 2})
    assert creates.run_once(KEY, resend, what="w", allow_duplicates=True) == {"Id": 2}
    assert resend.calls == 1 and store.get(KEY)["state"] == "done"


@pytest.mark.parametrize(
    "error",
    [
        WorkflowsoftConnectionError("POST", "/api/v2/tasks", "Connection refused", sent=False),
        WorkflowsoftBadRequestError(400, "POST", "/api/v2/tasks", "Title is required"),
        WorkflowsoftTransientError(429, "POST", "/api/v2/tasks", "slow down"),
        WorkflowsoftTransientError(503, "POST", "/api/v2/tasks", "unavailable"),
        WorkflowsoftValidationError("bad title"),
    ],
    ids=["refused", "400", "429", "503", "invalid"],
)
def test_surely_not_sent_failures_clear_the_record(store: MemoryStore, error: Exception) -> None:
    creates = CreateLedger(store=store)
    with pytest.raises(type(error)):
        creates.run_once(KEY, Sender(error), what="w")
    assert store.get(KEY) is None
    assert creates.run_once(KEY, Sender({"Id": 3}), what="w") == {"Id": 3}  # the retry sends


@pytest.mark.parametrize(
    "error",
    [
        WorkflowsoftTransientError(500, "POST", "/api/v2/tasks", "boom"),
        WorkflowsoftConnectionError("POST", "/api/v2/tasks", "Read timed out", sent=True),
    ],
    ids=["500", "maybe-sent"],
)
def test_maybe_acted_failures_keep_the_record(store: MemoryStore, error: Exception) -> None:
    creates = CreateLedger(store=store)
    with pytest.raises(type(error)):
        creates.run_once(KEY, Sender(error), what="w")
    assert store.get(KEY)["state"] == SENDING
    with pytest.raises(DuplicateRiskError):
        creates.run_once(KEY, Sender(AssertionError("must not be sent")), what="w")


def test_create_task_operator_dropped_answer_sends_once(rm: Any, store: MemoryStore) -> None:
    rm.post(f"{BASE}/api/v2/tasks", exc=requests.exceptions.ConnectionError("Remote end closed connection"))
    op = WorkflowsoftCreateTaskOperator(task_id="create_task", title="Call", on_behalf_of=1, ledger_store=store)
    op._hook = WorkflowsoftHook(client_kwargs={"sleep": lambda seconds: None})
    rm.get(f"{BASE}/api/users/search", json=[{"Id": 1, "FullName": "John Doe", "Email": "john.doe@example.com"}])

    for _ in range(3):  # the first try and two retries
        with fails_without_retries(DuplicateRiskError):
            op.execute(fake_context("create_task", run_id="manual__1"))  # type: ignore[arg-type]
    assert sent(rm).count("POST /api/v2/tasks") == 1


# ---------------------------------------------------------------------------------------------------
# Claims: lease, reclaim, release
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


def run_ledger(store: MemoryStore, clock: Clock, owner: str) -> ClaimsLedger:
    """The claims ledger of one task instance, as it is built in a task: fresh, reading the store."""
    return ClaimsLedger(CONN, store=store, owner=owner, clock=clock)


def instances(*ids: int) -> list[dict[str, Any]]:
    return [{"IntegrationInstanceId": i, "ProcessInstanceId": i - 4000} for i in ids]


def offered_ids(store: MemoryStore, clock: Clock, owner: str, step: int, lease: dt.timedelta | None,
                limit: int = 10) -> list[Any]:
    offered, _skip = run_ledger(store, clock, owner).prepare_drain(step, lease, limit)
    return [i["IntegrationInstanceId"] for i in offered]


def test_reclaim_only_after_the_lease(store: MemoryStore, clock: Clock) -> None:
    run_ledger(store, clock, "run-1").claim(11, instances(5001, 5002))
    lease = dt.timedelta(minutes=10)
    clock.now = T0 + dt.timedelta(minutes=9)
    offered, skip = run_ledger(store, clock, "run-2").prepare_drain(11, lease, 10)
    assert offered == [] and sorted(skip) == [5001, 5002]  # held within the lease: left alone
    clock.now = T0 + dt.timedelta(minutes=10)
    offered, _ = run_ledger(store, clock, "run-2").prepare_drain(11, lease, 10)
    assert offered == [
        {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1001, "reclaimed": True},
        {"IntegrationInstanceId": 5002, "ProcessInstanceId": 1002, "reclaimed": True},
    ]
    record = {c["integration_instance_id"]: c for c in run_ledger(store, clock, "reader").list_claims()}[5001]
    assert record["owner"] == "run-2" and record["offers"] == 2
    assert record["first_claimed_at"] == T0.isoformat()
    # The lease is renewed: a third run does not take them at once.
    assert offered_ids(store, clock, "run-3", 11, lease) == []
    assert offered_ids(store, clock, "run-3", 11, None) == []  # no lease: never re-offered


def test_reclaim_skips_done(store: MemoryStore, clock: Clock) -> None:
    run_ledger(store, clock, "run-1").claim(11, instances(5001, 5002, 5003))
    completer = run_ledger(store, clock, "dag/run/complete/0")  # a mapped completion, another task instance
    completer.mark_done([5001])
    completer.close()
    clock.now = T0 + dt.timedelta(hours=2)
    assert offered_ids(store, clock, "run-2", 11, dt.timedelta(hours=1), limit=5) == [5002, 5003]
    assert offered_ids(store, clock, "run-3", 11, dt.timedelta(0), limit=1) == [5002]


def test_resolved_claims_are_tidied(store: MemoryStore, clock: Clock) -> None:
    sensor = run_ledger(store, clock, "run-1")
    sensor.claim(11, instances(5001))
    sensor.close()
    completer = run_ledger(store, clock, "dag/run/complete/0")
    completer.mark_done([5001])
    completer.close()
    assert offered_ids(store, clock, "run-2", 11, dt.timedelta(0)) == []
    assert store.keys(naming.claims_prefix(CONN)) == []  # both records gone


def test_forget_drops_claims(store: MemoryStore, clock: Clock) -> None:
    holder = run_ledger(store, clock, "run-1")
    holder.claim(11, instances(5001, 5002))
    holder.claim(21, instances(5101))
    reader = run_ledger(store, clock, "reader")
    assert sorted(r["integration_instance_id"] for r in reader.list_claims()) == [5001, 5002, 5101]
    assert reader.forget([5001, "5101", 9999]) == [5001, 5101]
    assert reader.release([5001], forget=True) == []  # gone: nothing left to forget
    assert [r["integration_instance_id"] for r in run_ledger(store, clock, "reader").list_claims()] == [5002]
    clock.now = T0 + dt.timedelta(days=1)
    assert offered_ids(store, clock, "run-2", 11, dt.timedelta(0)) == [5002]
    assert offered_ids(store, clock, "run-2", 21, dt.timedelta(0)) == []


def test_claims_operators_list_and_release(store: MemoryStore) -> None:
    ClaimsLedger(CONN, store=store, owner="run-1").claim(11, instances(5001, 5002))
    listed = WorkflowsoftListClaimsOperator(task_id="list", ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in listed] == [5001, 5002]
    released = WorkflowsoftReleaseClaimsOperator(task_id="release", instance_ids="5001", ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in released] == [5001]
    left = WorkflowsoftListClaimsOperator(task_id="list", integration_step_id="11", ledger_store=store).execute({})
    assert [(r["integration_instance_id"], r.get("released", False)) for r in left] == [(5001, True), (5002, False)]
    forgot = WorkflowsoftReleaseClaimsOperator(task_id="forget", instance_ids=[5001], forget=True,
                                               ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in forgot] == [5001]
    left = WorkflowsoftListClaimsOperator(task_id="list", integration_step_id="11", ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in left] == [5002]


def test_deprecated_claims_operator_still_lists_and_releases(store: MemoryStore) -> None:
    ClaimsLedger(CONN, store=store, owner="run-1").claim(11, instances(5001, 5002))
    with pytest.warns(DeprecationWarning, match="WorkflowsoftListClaimsOperator"):
        listed = WorkflowsoftClaimsOperator(task_id="list", ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in listed] == [5001, 5002]
    with pytest.warns(DeprecationWarning):
        released = WorkflowsoftClaimsOperator(
            task_id="release", action="forget", instance_ids="5001", ledger_store=store
        ).execute({})
    assert [r["integration_instance_id"] for r in released] == [5001]
    with pytest.warns(DeprecationWarning):
        left = WorkflowsoftClaimsOperator(task_id="list", integration_diagram_id="11", ledger_store=store).execute({})
    assert [r["integration_instance_id"] for r in left] == [5002]


def test_claim_keys_are_per_connection_and_safe(store: MemoryStore) -> None:
    a = ClaimsLedger("wfs:prod", store=store, owner="dag/manual__2026-01-01T00:00:00+00:00/sensor/-1")
    b = ClaimsLedger("wfs_test", store=store, owner="dag/manual__2026-01-01T00:00:00+00:00/sensor/-1")
    a.claim(11, instances(5001))
    (key,) = store.keys("workflowsoft.")
    assert key.startswith("workflowsoft.claims.wfs_prod.dag.sensor.-1.")
    assert all(ch.isalnum() or ch in "._-" for ch in key)
    assert b.list_claims() == [] and [c["integration_instance_id"] for c in a.list_claims()] == [5001]
