"""Event-driven scheduling without a triggerer process: the step's Asset, the watcher's trigger against the
emulator over loopback (its records in memory stores), and reading a run's asset events. The same trigger
under Airflow's real scheduler and triggerer is tested in tests/deployment/test_embedded.py."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.assets import workflowsoft as assets
from airflow_provider_workflowsoft.assets.workflowsoft import (
    instances_from_events,
    integration_step_asset,
    integration_step_uri,
)
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.triggers.workflowsoft import (
    WorkflowsoftIntegrationEventTrigger,
    WorkflowsoftIntegrationTrigger,
)
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_3_PLUS

needs_watchers = pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="asset watchers: Airflow 3.1+")


def ids(instances: list[dict[str, Any]]) -> list[Any]:
    return [i["IntegrationInstanceId"] for i in instances]


# -- the Asset ------------------------------------------------------------------------------------------


def test_uri_is_stable_per_connection_and_step() -> None:
    assert integration_step_uri(11) == "workflowsoft://workflowsoft_default/integration-steps/11"
    assert integration_step_uri("11", workflowsoft_conn_id="wfs_eu") == "workflowsoft://wfs_eu/integration-steps/11"
    by_name = integration_step_uri(process_diagram_name=" Event registration", integration_step_name="Enrich/event")
    assert by_name == ("workflowsoft://workflowsoft_default/process-diagrams/Event%20registration/"
                       "integration-steps/Enrich%2Fevent")


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"integration_step_id": "eleven"}, "integration_step_id"),
    ({"integration_step_id": True}, "integration_step_id"),
    ({"process_diagram_name": "Event registration"}, "integration_step_name"),
    ({"integration_step_id": 11, "workflowsoft_conn_id": "a/b"}, "workflowsoft_conn_id"),
])
def test_bad_step_or_connection_is_named(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(WorkflowsoftInputError, match=named):
        integration_step_uri(**kwargs)


@needs_watchers
def test_asset_carries_a_serialisable_watcher_named_by_its_uri() -> None:
    asset = integration_step_asset(11, max_instances=20, poll_interval=5, reclaim_after=dt.timedelta(minutes=10))
    assert asset.name == asset.uri == "workflowsoft://workflowsoft_default/integration-steps/11"
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath.endswith("WorkflowsoftIntegrationEventTrigger")
    assert kwargs["asset_uri"] == asset.uri and kwargs["max_instances"] == 20 and kwargs["reclaim_after"] == 600
    json.dumps(kwargs)
    module, name = classpath.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls(**kwargs).serialize() == (classpath, kwargs)
    plain = integration_step_asset(11, watch=False)
    assert plain.uri == asset.uri and not plain.watchers


@needs_watchers
@pytest.mark.parametrize(("kwargs", "named"), [
    ({"max_instances": 0}, "max_instances"),
    ({"poll_interval": 0}, "poll_interval"),
    ({"poll_interval": 30, "reclaim_after": 30}, "reclaim_after"),
    ({"reclaim_after": "soon"}, "reclaim_after"),
])
def test_bad_watcher_settings_are_named(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(WorkflowsoftInputError, match=named):
        integration_step_asset(11, **kwargs)


def test_older_airflow_gets_an_error_naming_the_version_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "AIRFLOW_V_3_1_PLUS", False)
    needed = r"needs Airflow 3\.1 or newer; this is Airflow .*WorkflowsoftIntegrationSensor"
    with pytest.raises(RuntimeError, match=needed):
        assets.integration_step_asset(11)


# -- a run's events --------------------------------------------------------------------------------------


def event(instances: list[int], at: str, uri: str = "workflowsoft://c/integration-steps/11") -> SimpleNamespace:
    payload = {"status": "success", "integration_step_id": 11, "asset_uri": uri,
               "instances": [{"IntegrationInstanceId": i, "ProcessInstanceId": 90 + i} for i in instances]}
    return SimpleNamespace(extra={"from_trigger": True, "payload": payload}, timestamp=at)


@dataclasses.dataclass(frozen=True)
class AssetKey:
    uri: str


def test_instances_from_all_events_in_order_without_duplicates() -> None:
    step = AssetKey("workflowsoft://c/integration-steps/11")
    other = AssetKey("s3://bucket/x")
    events = {step: [event([3, 4], "2026-01-01T00:00:02"), event([1, 2], "2026-01-01T00:00:01"),
                     event([4, 5], "2026-01-01T00:00:03")],
              other: [SimpleNamespace(extra={"rows": 5}, timestamp="2026-01-01T00:00:00")]}
    got = instances_from_events(events)
    assert ids(got) == [1, 2, 3, 4, 5]
    assert got[0] == {"IntegrationInstanceId": 1, "ProcessInstanceId": 91}
    assert ids(instances_from_events(events, asset=other)) == []
    assert ids(instances_from_events(events, asset=step.uri)) == [1, 2, 3, 4, 5]
    as_dicts = [{"extra": {"payload": {"instances": [{"IntegrationInstanceId": 7}]}}}]
    assert ids(instances_from_events(as_dicts)) == [7]
    assert instances_from_events(None) == [] and instances_from_events({}) == []


# -- the watcher's trigger against the emulator ----------------------------------------------------------


def watcher(own: MemoryStore, shared: MemoryStore, **kwargs: Any) -> WorkflowsoftIntegrationEventTrigger:
    trigger = WorkflowsoftIntegrationEventTrigger(
        **{"integration_step_id": 11, "max_instances": 3, "poll_interval": 0.01, "reclaim_after": 60,
           "asset_uri": "workflowsoft://workflowsoft_default/integration-steps/11", **kwargs})
    trigger.own_store, trigger.claims_store = own, shared
    return trigger


def events_of(trigger: Any, count: int, *, max_sleeps: int = 20, on_sleep: Any = None) -> list[dict[str, Any]]:
    """The first ``count`` events (fewer when the trigger slept ``max_sleeps`` times without one)."""
    async def go() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        sleeps = 0

        async def sleep(_seconds: float) -> None:
            nonlocal sleeps
            sleeps += 1
            if on_sleep is not None:
                on_sleep(sleeps)
            if sleeps > max_sleeps:
                raise asyncio.CancelledError
            await asyncio.sleep(0)

        trigger.sleep = sleep
        agen = trigger.run()
        try:
            while len(got) < count:
                got.append((await asyncio.wait_for(agen.__anext__(), 30)).payload)
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        finally:
            await agen.aclose()
        return got

    return asyncio.run(go())


def own_claims(own: MemoryStore) -> dict[str, Any]:
    (record,) = [own.get(k) for k in own.keys("")]
    return dict(record["claims"])


def take_over(shared: MemoryStore, run: str, instances: list[dict[str, Any]]) -> None:
    """What a run's batch worker given the event's instances does first: claim them in its own record."""
    ClaimsLedger("workflowsoft_default", shared, owner=f"dag/{run}/enrich/-1").claim(
        11, [{**i, "shared": True} for i in instances])


def test_watcher_claims_before_it_fires_each_drain_as_one_event(emu) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=4)
    (first,) = events_of(watcher(own, shared), 1)
    assert ids(first["instances"]) == [5001, 5002, 5003] and first["asset_uri"].endswith("/integration-steps/11")
    assert sorted(own_claims(own)) == ["5001", "5002", "5003"]  # claimed in the Asset's store...
    assert shared.keys("") == []  # ...not among the Variables


def test_a_burst_goes_out_one_event_per_run_and_none_waits_for_a_next_arrival(emu) -> None:
    """Airflow's queue keeps one row per (Asset, DAG): an event fired before the run of the previous one exists
    would wait for a later event. So the watcher fires the next event only once a run took the last one."""
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=7)
    trigger = watcher(own, shared)
    taken: list[list[Any]] = []
    fired: list[dict[str, Any]] = []

    def on_sleep(sleeps: int) -> None:
        # A run takes each event over a few checks after it was fired (the scheduler, then its batch worker).
        if fired and len(taken) < len(fired) and sleeps % 3 == 0:
            take_over(shared, f"run{len(taken)}", fired[len(taken)]["instances"])
            taken.append(ids(fired[len(taken)]["instances"]))

    async def go() -> None:
        sleeps = 0

        async def sleep(_seconds: float) -> None:
            nonlocal sleeps
            sleeps += 1
            assert len(fired) - len(taken) <= 1, "a second event was fired before a run took the first"
            on_sleep(sleeps)
            if sleeps > 40:
                raise asyncio.CancelledError
            await asyncio.sleep(0)

        trigger.sleep = sleep
        agen = trigger.run()
        try:
            while True:
                fired.append((await asyncio.wait_for(agen.__anext__(), 30)).payload)
                assert len(fired) - len(taken) <= 1, "a second event was fired before a run took the first"
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        finally:
            await agen.aclose()

    asyncio.run(go())
    assert [ids(e["instances"]) for e in fired] == [[5001, 5002, 5003], [5004, 5005, 5006], [5007]]
    assert taken == [ids(e["instances"]) for e in fired]  # each event taken by its own run, nothing twice


def test_an_event_nobody_takes_holds_the_next_until_the_lease_then_comes_back(emu) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=4)
    (first,) = events_of(watcher(own, shared), 1)
    assert events_of(watcher(own, shared), 1, max_sleeps=5) == []  # restarted: still waits for a run
    assert emu.snapshot()["instances"][3]["status"] == "new"  # 5004 stays in Workflowsoft, unclaimed
    record = own.get(own.keys("")[0])  # the lease passes
    for claim in record["claims"].values():
        claim["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
    own.set(own.keys("")[0], record)
    (again,) = events_of(watcher(own, shared), 1)
    assert ids(again["instances"]) == ids(first["instances"]) and all(i["reclaimed"] for i in again["instances"])


def test_restarted_watcher_does_not_hand_out_an_instance_twice(emu) -> None:
    emu.update_settings(poll_semantics="until-completed")  # the server repeats what is not completed
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=2)
    (first,) = events_of(watcher(own, shared), 1)
    assert ids(first["instances"]) == [5001]  # the server repeats its oldest open instance: the drain stops
    # The triggerer restarts the watcher: it reads its record back and, although the server still hands
    # 5001 out, leaves it to the run it was given to.
    assert events_of(watcher(own, shared), 1, max_sleeps=3) == []
    assert emu.snapshot()["instances"][0]["status"] == "handed_out"


def test_completed_instances_leave_the_watcher_and_failed_ones_come_back_after_the_lease(emu) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=2)
    (first,) = events_of(watcher(own, shared), 1)
    assert ids(first["instances"]) == [5001, 5002]
    # The run completes 5001 and marks it done in its own claims record (as the completion operators do).
    run = ClaimsLedger("workflowsoft_default", shared, owner="dag/run1/complete/0")
    run.mark_done([5001])
    run.close()
    later = watcher(own, shared)
    assert events_of(later, 1, max_sleeps=2) == []  # within the lease: nothing handed out again
    assert sorted(own_claims(own)) == ["5002"]  # 5001 is resolved and dropped
    # 5002's run failed: after the lease the watcher hands it out again, marked as re-offered.
    record = own.get(own.keys("")[0])
    record["claims"]["5002"]["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61)).isoformat()
    own.set(own.keys("")[0], record)
    (again,) = events_of(watcher(own, shared), 1)
    process = first["instances"][1]["ProcessInstanceId"]
    assert again["instances"] == [{"IntegrationInstanceId": 5002, "ProcessInstanceId": process, "reclaimed": True}]


def test_watcher_looks_the_step_up_by_name_and_reads_fields_after_claiming(emu) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=1)
    trigger = watcher(own, shared, integration_step_id=None, process_diagram_name="event REGISTRATION",
                      integration_step_name="Enrich event", fetch_fields=True)
    (got,) = events_of(trigger, 1)
    assert got["integration_step_id"] == 11 and got["instances"][0]["fields"]["Event name"] == "Event Test"
    assert "5001" in own_claims(own)


def test_watcher_rides_out_faults_and_never_fires_an_error(emu) -> None:
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=1)
    emu.set_faults(error_rate=1.0, error_statuses=[503], paths=["/api/v2/integrations/new"], max_faults=4,
                   retry_after=0)
    (got,) = events_of(watcher(own, shared, client_options={"max_retries": 0}), 1)
    assert got["status"] == "success" and ids(got["instances"]) == [5001]


def test_watcher_with_an_unknown_step_logs_and_keeps_trying(emu, caplog: pytest.LogCaptureFixture) -> None:
    own, shared = MemoryStore(), MemoryStore()
    got = events_of(watcher(own, shared, integration_step_id=None, process_diagram_name="Nope",
                            integration_step_name="Enrich event"), 1, max_sleeps=2)
    assert got == []
    assert "No process diagram titled 'Nope'" in caplog.text and "fix the connection or the step" in caplog.text


# -- the deferrable sensor's trigger claims before its event ---------------------------------------------


def test_deferred_trigger_claims_in_the_sensor_record_and_reoffers_after_a_restart(emu) -> None:
    store = MemoryStore()
    owner = "dag/run1/wait/-1"
    emu.create_instances(11, count=2)

    def trigger() -> WorkflowsoftIntegrationTrigger:
        t = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=2, poll_interval=0.01,
                                           claims_owner=owner, reclaim_after=60)
        t.claims_store = store
        return t

    (event_one,) = events_of(trigger(), 1)
    assert ids(event_one["instances"]) == [5001, 5002]
    ledger = ClaimsLedger("workflowsoft_default", store, owner=owner)
    assert ledger.own_state(5001) == ledger.own_state(5002) == "claimed"  # before the event was fired
    # The triggerer died before the event was stored: the trigger runs again and offers its claims first,
    # although the server (handing out once) will never give them again.
    (event_two,) = events_of(trigger(), 1)
    assert ids(event_two["instances"]) == [5001, 5002] and all(i.get("reclaimed") for i in event_two["instances"])


# -- the step's Asset in the Assets view, and lineage on completion --------------------------------------


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="asset watchers: Airflow 3.3")
def test_no_implicit_inlets_that_would_replace_the_watchers_definition() -> None:
    """Airflow keeps one definition per Asset: a plain copy of the step's Asset in a task's inlets replaces the
    watched one when its DAG file is parsed. So the sensor and the worker add none; the example DAG passes
    the watched Asset object itself."""
    from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
    from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor

    assert WorkflowsoftIntegrationSensor(task_id="s", integration_step_id=11).inlets == []
    worker = WorkflowsoftIntegrationWorkerOperator(task_id="w", python_callable=dict, integration_step_id=11)
    assert worker.inlets == [] and worker.outlets == []
    example: dict[str, Any] = {"__name__": "example_event_driven"}
    path = Path(__file__).resolve().parents[2] / "dags" / "workflowsoft_enrich_events_on_arrival.py"
    exec(compile(path.read_text(), str(path), "exec"), example)
    dag = example["workflowsoft_enrich_events_on_arrival"]()
    (inlet,) = dag.get_task("enrich").inlets
    assert inlet is example["ENRICH_EVENT"] and inlet.watchers


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="OpenLineage provider tested with Airflow 3")
def test_completions_report_the_step_as_an_openlineage_output(emu) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is optional")
    from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
    from airflow_provider_workflowsoft.operators.workflowsoft import WorkflowsoftCompleteStepOperator
    from tests.conftest import fake_context

    emu.create_instances(11, count=3)
    worker = WorkflowsoftIntegrationWorkerOperator(
        task_id="w", integration_step_id=11, ledger_store=MemoryStore(),
        python_callable=lambda fields: {"Venue code": "HALL-A", "Event exists": True})
    assert worker.get_openlineage_facets_on_complete(None) is None  # nothing done yet
    worker.execute(fake_context("w"))
    (output,) = worker.get_openlineage_facets_on_complete(None).outputs
    assert output.namespace == "workflowsoft://" + emu.base_url.split("://", 1)[1]
    assert output.name == "integration-steps/11"
    assert [f.name for f in output.facets["schema"].fields] == ["Event exists", "Venue code"]
    assert output.outputFacets["outputStatistics"].rowCount == 3

    emu.create_instances(11, count=1)
    complete = WorkflowsoftCompleteStepOperator(task_id="c", integration_instance_id=5004, ledger_store=MemoryStore(),
                                                fields={"Venue code": "HALL-B"},
                                                inlets=[integration_step_asset(11, watch=False)])
    complete.execute(fake_context("c"))
    (output,) = complete.get_openlineage_facets_on_complete(None).outputs
    assert output.name == "integration-steps/11" and [f.name for f in output.facets["schema"].fields] == ["Venue code"]
    assert output.outputFacets["outputStatistics"].rowCount == 1


def test_watcher_outlives_a_missing_connection(caplog: pytest.LogCaptureFixture) -> None:
    own, shared = MemoryStore(), MemoryStore()
    got = events_of(watcher(own, shared, workflowsoft_conn_id="no_such_conn"), 1, max_sleeps=3)
    assert got == [] and caplog.text.count("a round failed") >= 3 and "no_such_conn" in caplog.text


def test_watcher_without_an_asset_uri_names_its_record_by_the_step(emu) -> None:
    """The MessageQueueTrigger form does not know its Asset: the step's URI names the record, events carry none."""
    with pytest.raises(WorkflowsoftInputError, match="asset_uri"):
        WorkflowsoftIntegrationEventTrigger(integration_step_id=11, asset_uri=11)  # type: ignore[arg-type]
    own, shared = MemoryStore(), MemoryStore()
    emu.create_instances(11, count=1)
    (got,) = events_of(watcher(own, shared, asset_uri=""), 1)
    assert "asset_uri" not in got and ids(got["instances"]) == [5001]
    record = own.get(own.keys("")[0])
    assert record["owner"] == "asset-watcher:workflowsoft://workflowsoft_default/integration-steps/11"


def test_events_of_two_steps_need_the_asset_named() -> None:
    one, two = AssetKey("workflowsoft://c/integration-steps/11"), AssetKey("workflowsoft://c/integration-steps/12")
    events = {one: [event([1], "2026-01-01T00:00:01", one.uri)], two: [event([2], "2026-01-01T00:00:02", two.uri)]}
    with pytest.raises(WorkflowsoftInputError, match="integration-steps/11, workflowsoft://c/integration-steps/12"):
        instances_from_events(events)
    assert ids(instances_from_events(events, asset=two)) == [2]


def test_a_done_mark_outlives_other_readers_for_one_lease_so_the_watcher_sees_it() -> None:
    """The watcher's claim lives in its Asset's state store, invisible to the Variables readers: a reader that
    tidies must not delete the done mark the watcher has not read yet."""
    variables, asset_store = MemoryStore(), MemoryStore()
    lease = dt.timedelta(hours=1)
    watcher_ledger = ClaimsLedger("c", variables, owner="asset-watcher:workflowsoft://c/integration-steps/11",
                                  own_store=asset_store)
    watcher_ledger.claim(11, [{"IntegrationInstanceId": 7001}])
    run = ClaimsLedger("c", variables, owner="dag/run1/complete/0")
    run.mark_done([7001])
    run.close()
    other = ClaimsLedger("c", variables, owner="dag/run9/wait/-1")
    other.prepare_drain(12, lease, 10)  # another step's sensor tidies the connection's records
    assert variables.keys("") != []  # the done mark is kept...
    offered, held = ClaimsLedger("c", variables, owner=watcher_ledger.owner, own_store=asset_store).prepare_drain(
        11, lease, 10, own_at_once=False)
    assert offered == [] and held == []  # ...so the watcher resolves its claim instead of re-offering it later
    later = ClaimsLedger("c", variables, owner="dag/run10/wait/-1",
                         clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    later.prepare_drain(12, lease, 10)
    assert variables.keys("") == []  # a lease after the completion it goes


def test_after_a_restart_the_watcher_waits_for_its_fresh_hand_overs_whatever_older_claims_do() -> None:
    """A restarted watcher does not know its last event: its claims within the lease stand for it; a claim whose
    lease is over (offered again at the next drain) or one put back by hand does not count as taken."""
    own, shared = MemoryStore(), MemoryStore()
    ledger = ClaimsLedger("workflowsoft_default", shared, owner="asset-watcher:workflowsoft://c/integration-steps/11",
                          own_store=own)
    ledger.claim(11, [{"IntegrationInstanceId": 1}, {"IntegrationInstanceId": 2}])
    record = own.get(own.keys("")[0])
    record["claims"]["1"]["claimed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    own.set(own.keys("")[0], record)
    lease = dt.timedelta(hours=1)
    fresh = ClaimsLedger("workflowsoft_default", shared, owner=ledger.owner, own_store=own)
    assert fresh.awaiting_run(11, lease) == [2]  # 2 waits for a run; 1 is due again, not "taken"
    take_over(shared, "run1", [{"IntegrationInstanceId": 2}])
    assert ClaimsLedger("workflowsoft_default", shared, owner=ledger.owner, own_store=own).awaiting_run(11, lease) == []
    assert fresh.awaiting_run(11, lease, among=[2]) == []  # the records read again: a run took it
