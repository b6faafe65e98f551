"""The sensor's claim lease (``reclaim_after``): templated (rendered values arrive as strings), and kept alive by
every live holder of the sensor's claims (the check itself, the resumed task, a downstream batch worker), while a dead
run's claims come back after one lease. The deferrable trigger's part is in ``tests/triggers/test_trigger_lease.py``;
under real Airflow (``airflow dags test``) in ``tests/dag_runs/test_sensor_lease.py``."""

from __future__ import annotations

import collections
import datetime as dt
import time
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import CountingStore, MemoryStore
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor, as_timedelta
from airflow_provider_workflowsoft.worker.engine import WorkerEngine
from tests.conftest import claim_of, fake_context, second_drain

CONN = "workflowsoft_default"


def test_reclaim_after_is_a_template_field() -> None:
    assert "reclaim_after" in WorkflowsoftIntegrationSensor.template_fields


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (dt.timedelta(minutes=5), dt.timedelta(minutes=5)),
        (None, None),
        ("", None),
        ("None", None),
        (0, dt.timedelta(0)),
        ("0", dt.timedelta(0)),
        ("3600", dt.timedelta(hours=1)),
        (90.5, dt.timedelta(seconds=90.5)),
    ],
)
def test_lease_values_accepted(given: object, expected: dt.timedelta | None) -> None:
    assert as_timedelta(given, "reclaim_after") == expected


@pytest.mark.parametrize("given", ["an hour", "-1", -5, [1]])
def test_bad_lease_is_refused_with_its_name_and_value(given: object) -> None:
    with pytest.raises(WorkflowsoftInputError, match=r"reclaim_after .*" + repr(given).replace("[", r"\[")
                       .replace("]", r"\]")):
        as_timedelta(given, "reclaim_after")


# -- the sensor's claims kept alive by their live holders ---------------------------------------------------------
#
# The case (lease 10 s, work 14 s) scaled down: lease 0.6 s, a check or a downstream run lasting about 1.4
# leases, a second run of the same step draining in the middle of it. The control switches renewals off (the same
# timing then re-offers what the first run holds), so each test can fail.

LEASE = dt.timedelta(seconds=0.6)
FIELDS_PATH = "/api/v2/workflows/instances/tasks/"



def _no_renewals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_provider_workflowsoft.records.leases.renew_interval", lambda *a, **k: None)


@pytest.mark.parametrize("renewing", [True, False])
def test_a_check_slower_than_the_lease_keeps_what_it_took(emu: EmulatorServer, store: MemoryStore,
                                                         monkeypatch: pytest.MonkeyPatch, renewing: bool) -> None:
    if not renewing:
        _no_renewals(monkeypatch)
    emu.create_instances(11, count=2)
    emu.set_faults(latency_ms=500, paths=[FIELDS_PATH])  # reading the fields of 2 instances: 1.7 leases
    s = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=11, max_instances=2, fetch_fields=True,
                                      reclaim_after=LEASE, deferrable=False, ledger_store=store)
    offered: list[Any] = []
    second = second_drain(store, 0.85, offered, lease=LEASE)  # past the lease, while the first check reads fields
    result = s.poke(fake_context("wait"))  # type: ignore[arg-type]
    second.join(10)
    assert [i["IntegrationInstanceId"] for i in result.xcom_value] == [5001, 5002]
    if not renewing:
        assert offered == [5001, 5002]  # the control: without renewals the second run takes them
        return
    assert offered == []


@pytest.mark.parametrize("renewing", [True, False])
def test_a_downstream_batch_worker_keeps_the_sensors_claims_and_nothing_is_done_twice(
        emu: EmulatorServer, store: MemoryStore, monkeypatch: pytest.MonkeyPatch, renewing: bool) -> None:
    # sensor -> WorkflowsoftIntegrationWorkerOperator(instances=sensor.output): the worker takes the sensor's claims
    # over in its own record and renews them while its callable runs (1.4 leases per instance).
    if not renewing:
        _no_renewals(monkeypatch)
    ids = [int(i["IntegrationInstanceId"]) for i in emu.create_instances(11, count=4)]
    s = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=11, max_instances=4,
                                      reclaim_after=LEASE, deferrable=False, ledger_store=store)
    handed = s.poke(fake_context("wait")).xcom_value  # type: ignore[arg-type]
    calls = collections.Counter[int]()

    def work(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        calls[int(instance["IntegrationInstanceId"])] += 1
        time.sleep(0.84)
        return {"Venue code": "V"}

    offered: list[Any] = []
    second = second_drain(store, 0.85, offered, lease=LEASE)
    with WorkflowsoftClient(ClientConfig(base_url=emu.base_url, api_token="demo-token", max_retries=0)) as client:
        engine = WorkerEngine(client, work, integration_step_id=11, max_workers=4, reclaim_after=LEASE,
                             claims=ClaimsLedger(CONN, store, owner="dag/run1/work/-1"), progress_interval=None)
        report = engine.run(handed)
    second.join(10)
    if not renewing:
        assert sorted(offered) == ids  # the control: the second run re-offers what the first is working on
        return
    assert offered == [] and report["succeeded_count"] == 4 and report["lease_renewals"] >= 1
    assert calls == {i: 1 for i in ids} and report["already_completed_count"] == 0


def test_a_dead_runs_sensor_claims_come_back_after_one_lease(emu: EmulatorServer, store: MemoryStore) -> None:
    # The run died after its sensor (nothing downstream took the instances over): one lease later they are re-offered.
    emu.create_instances(11, count=2)
    s = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=11, max_instances=2,
                                      reclaim_after=LEASE, deferrable=False, ledger_store=store)
    s.poke(fake_context("wait"))  # type: ignore[arg-type]
    within: list[Any] = []
    second_drain(store, 0.0, within, lease=LEASE).join(10)
    after: list[Any] = []
    second_drain(store, LEASE.total_seconds() + 0.05, after, run="run3", lease=LEASE).join(10)
    assert within == [] and after == [5001, 5002]


def test_the_resumed_sensor_renews_what_its_trigger_claimed_with_the_write_that_closes_its_record(
        store: MemoryStore) -> None:
    counting = CountingStore(store)
    s = WorkflowsoftIntegrationSensor(task_id="wait", integration_step_id=11, reclaim_after=LEASE, deferrable=True,
                                      ledger_store=counting)
    s._step_id = 11
    trigger_side = ClaimsLedger(CONN, store, owner="dag/run1/wait/-1")  # what the trigger wrote before its event
    trigger_side.claim(11, [{"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}])
    before = counting.round_trips
    result = s.execute_complete(fake_context("wait"), {"status": "success", "instances": [  # type: ignore[arg-type]
        {"IntegrationInstanceId": 5001, "ProcessInstanceId": 1}]})
    assert [i["IntegrationInstanceId"] for i in result] == [5001]
    claim = claim_of(store, 5001)
    assert claim is not None and "renewed_at" in claim and claim["offers"] == 1  # renewed, not offered twice
    assert counting.calls["set"] == 1 and counting.round_trips - before == 2  # its record read, then one write
