"""Embedded deployment (LocalExecutor, SQLite; separate scheduler, dag-processor, triggerer, API server):
the deferrable sensor waits in the real triggerer and a mapped completion finishes what it received; the
triggerer dies right after a poll; the event-driven example DAG runs on its Asset watcher (one instance at
a time, a burst of 50, the triggerer killed after a poll with both server readings); bursts of five times a watcher's
``max_instances`` (both server readings, and the triggerer killed mid-burst); the ``MessageQueueTrigger`` example DAG;
a deadline alert creating a task from the triggerer; the batch worker's metrics reach a StatsD socket."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.deployment.conftest import (
    BURST_STEP,
    STEP,
    Deployment,
    assert_clean,
    completions,
    deferred_sensor_round,
    latencies,
    record_figures,
    variable_claims,
    wait_claimed,
    wait_completed,
    wait_watcher_running,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]


def test_deferrable_sensor_in_the_real_triggerer(embedded: Deployment) -> None:
    result = deferred_sensor_round(embedded)
    assert result["state"] == "success", embedded.log_tail()
    assert_clean(result["check"])
    runs = embedded.list_runs("deploy_deferred")
    assert any(r.get("run_id") == result["run_id"] and r.get("state") == "success" for r in runs), runs
    record_figures("embedded_deferrable_sensor", {
        "startup_s": round(embedded.startup_s, 1),  # type: ignore[attr-defined]
        **{k: v for k, v in result.items() if k not in ("ids", "check")},
        "lost": len(result["check"]["lost"]), "duplicated": len(result["check"]["duplicated"]),
        "open_claims": len(result["check"]["open_claims"]),
    })


def test_deferred_sensor_loses_nothing_when_the_triggerer_dies_after_a_poll(embedded: Deployment) -> None:
    """The trigger claims each instance in the sensor's record as soon as it is polled: a triggerer SIGKILLed
    right after its polls returned the instances, before the event reached the task, loses none of them on
    a server that hands each instance out once."""
    result = deferred_sensor_round(embedded, count=5, kill_after_poll=True)
    assert result["state"] == "success", embedded.log_tail()
    assert_clean(result["check"])
    record_figures("embedded_deferred_sensor_triggerer_killed_after_poll", {
        **{k: v for k, v in result.items() if k not in ("ids", "check")},
        "lost": len(result["check"]["lost"]), "duplicated": len(result["check"]["duplicated"]),
    })


# -- event-driven: the example DAG scheduled on the step's Asset, its watcher in the real triggerer --------

EVENT_DAG = "workflowsoft_enrich_events_on_arrival"


def watcher_records(dep: Deployment) -> list[dict[str, Any]]:
    """The watcher's claims records (in the Asset state store)."""
    rows = dep.query("SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
                     "WHERE a.uri LIKE 'workflowsoft://%' AND s.key LIKE 'workflowsoft.claims.%'")
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def watcher_claims(dep: Deployment) -> set[int]:
    return {int(i) for r in watcher_records(dep) for i in (r.get("claims") or {})}


def check_event_instances(dep: Deployment, ids: list[int]) -> dict[str, Any]:
    """Every instance completed exactly once with the example DAG's values; no claim left open anywhere."""
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    done = completions(dep.emulator)
    lost = [i for i in ids if snapshot[i]["status"] != "completed"]
    wrong = [i for i in ids if i not in lost and (
        snapshot[i]["fields"].get("Venue code") != "HALL-" + str(snapshot[i]["fields"].get("Event name"))[:3].upper()
        or snapshot[i]["fields"].get("Event exists") is not True)]
    watcher_open = sorted(int(i) for r in watcher_records(dep) for i in (r.get("claims") or {}) if int(i) in set(ids))
    handed = handed_out_in_events(dep)
    return {"instances": len(ids), "lost": lost, "duplicated": [i for i in ids if done.get(i, 0) > 1],
            "in_several_events": [i for i in ids if handed.get(i, 0) > 1],
            "wrong_values": wrong, "open_claims": sorted(i for i in dep.open_claims() if i in set(ids)),
            "watcher_open_claims": watcher_open}


def handed_out_in_events(dep: Deployment) -> dict[int, int]:
    """How many stored asset events carried each instance (a watcher must hand an instance out once; only
    an event lost with the triggerer, or a run that did not complete it within the lease, makes a second)."""
    counts: dict[int, int] = {}
    for (extra,) in dep.query("SELECT extra FROM asset_event"):
        data = json.loads(extra) if isinstance(extra, str) else extra or {}
        for instance in (data.get("payload") or {}).get("instances") or []:
            iid = int(instance["IntegrationInstanceId"])
            counts[iid] = counts.get(iid, 0) + 1
    return counts


def wait_watcher_resolved(dep: Deployment, ids: list[int], timeout: float = 60) -> None:
    """The watcher drops claims whose instances were completed at its next round (every poll interval)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(int(i) in set(ids) for r in watcher_records(dep) for i in (r.get("claims") or {})):
            return
        time.sleep(1)


def event_runs(dep: Deployment) -> list[Any]:
    return dep.query("SELECT run_id, state, run_type FROM dag_run WHERE dag_id=:d", d=EVENT_DAG)


def test_batch_worker_metrics_reach_statsd_on_a_real_deployment(embedded: Deployment) -> None:
    """The user's path for metrics: Airflow's components configured for StatsD (``[metrics] statsd_on``), the
    batch worker run by the scheduler's executor; its metrics arrive as StatsD packets on loopback UDP. (Before
    the event-driven tests: once their Asset watcher runs, it takes every new instance of the step.)"""
    statsd = embedded.statsd  # type: ignore[attr-defined]
    ids = [i["IntegrationInstanceId"] for i in embedded.emulator.create_instances(STEP, count=12)]
    statsd.clear()
    run_id = embedded.trigger("deploy_batch")
    assert embedded.wait_run("deploy_batch", run_id, timeout=300) == "success", embedded.log_tail()
    report = embedded.xcom("deploy_batch", run_id, "burst") or {}
    assert set(ids) <= set(report.get("succeeded", [])), report
    time.sleep(1.0)  # UDP: let the last packets arrive
    counters = statsd.counters()
    assert counters.get("airflow.workflowsoft.instances.completed") == len(report["succeeded"]), counters
    assert counters.get("airflow.workflowsoft.api.requests.complete") == len(report["succeeded"]), counters
    assert counters.get("airflow.workflowsoft.api.requests.poll", 0) > len(ids), counters
    assert counters.get("airflow.workflowsoft.claims.writes", 0) >= 1, counters
    names = statsd.names()
    assert {"airflow.workflowsoft.api.latency.get_fields", "airflow.workflowsoft.claims.open.11",
            "airflow.workflowsoft.instances.completed_duration"} <= names, names
    assert not any(str(i) in name for i in ids for name in names), names


def test_event_driven_example_dag_completes_each_instance_once(embedded: Deployment) -> None:
    watcher_start_s = wait_watcher_running(embedded, EVENT_DAG)
    # The first run after the watcher started, then one at a time: the time from creation to completion.
    first = [int(i["IntegrationInstanceId"]) for i in embedded.emulator.create_instances(STEP, count=1)]
    wait_completed(embedded, first, timeout=240)
    single: list[int] = []
    for _ in range(3):
        created = embedded.emulator.create_instances(STEP, count=1)
        ids = [int(i["IntegrationInstanceId"]) for i in created]
        wait_completed(embedded, ids, timeout=240)
        single += ids
    single_latency = latencies(embedded, single)
    # A burst of 50: every one completed once, across however many runs Airflow makes.
    runs_before = len(event_runs(embedded))
    created = embedded.emulator.create_instances(STEP, count=50)
    burst = [int(i["IntegrationInstanceId"]) for i in created]
    started = time.monotonic()
    wait_completed(embedded, burst, timeout=300)
    burst_s = time.monotonic() - started
    wait_watcher_resolved(embedded, first + single + burst)
    check = check_event_instances(embedded, first + single + burst)
    runs = event_runs(embedded)
    assert all(r[2] == "asset_triggered" for r in runs), runs
    assert not check["lost"] and not check["duplicated"] and not check["wrong_values"], check
    assert not check["open_claims"] and not check["watcher_open_claims"], check
    assert not check["in_several_events"], check  # each instance handed to exactly one run
    # The target: at most the poll interval (2 s here) plus 10 s from creation to completion.
    assert max(single_latency) <= 2 + 10, single_latency
    burst_latency = latencies(embedded, burst)
    record_figures("embedded_event_driven", {
        "poll_interval_s": 2, "unpause_to_watcher_running_s": round(watcher_start_s, 1),
        "first_creation_to_completed_s": round(latencies(embedded, first)[0], 2),
        "single_creation_to_completed_s": [round(x, 2) for x in single_latency],
        "burst": 50, "burst_runs": len(runs) - runs_before, "burst_all_completed_s": round(burst_s, 2),
        "burst_creation_to_completed_s_max": round(max(burst_latency), 2),
        "lost": 0, "duplicated": 0,
    })


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_event_watcher_loses_nothing_when_the_triggerer_dies_after_a_poll(embedded: Deployment, semantics: str) -> None:
    """SIGKILL the triggerer right after the watcher's polls returned instances (its claims record holds them,
    the event may not be stored yet): after its restart every
    instance is still completed exactly once (a claim whose event was lost is handed out again after the
    45 s lease; one whose event was stored is completed by its run and never handed out again)."""
    wait_watcher_running(embedded, EVENT_DAG)
    embedded.emulator.update_settings(poll_semantics=semantics)
    try:
        created = embedded.emulator.create_instances(STEP, count=10)
        ids = [int(i["IntegrationInstanceId"]) for i in created]
        # A drain takes every instance from a server that hands each out once, and only the oldest open one
        # from a server that repeats it until it is completed.
        wait_claimed(embedded, ids if semantics == "once" else ids[:1], watcher_claims)
        embedded.kill("triggerer")
        killed_at = time.monotonic()
        time.sleep(3)
        embedded.restart("triggerer")
        wait_completed(embedded, ids, timeout=300)
        recovered_s = time.monotonic() - killed_at
        wait_watcher_resolved(embedded, ids)
        check = check_event_instances(embedded, ids)
    finally:
        embedded.emulator.update_settings(poll_semantics="once")
    assert not check["lost"] and not check["duplicated"] and not check["wrong_values"], check
    assert not check["open_claims"] and not check["watcher_open_claims"], check
    # Handed out twice only when the event died with the triggerer (never stored): so no instance is in two
    # stored events.
    assert not check["in_several_events"], check
    record_figures(f"embedded_event_watcher_triggerer_killed_{semantics}", {
        "instances": 10, "kill_to_all_completed_s": round(recovered_s, 2), "lost": 0, "duplicated": 0,
        "in_several_events": 0})



# -- bursts larger than max_instances: one event per run, none waits for a next arrival ----------------------

BURST_DAG = "deploy_burst"
BURST_MAX = 4  # deploy_burst's max_instances (tests/deployment/dags)


def burst_round(dep: Deployment, count: int, timeout: float, kill_mid_burst: bool = False) -> dict[str, Any]:
    """Create ``count`` instances of step 31 at once, then silence: every one must be completed (once) within
    ``timeout``, shorter than deploy_burst's 180 s lease, so none may wait for a re-offer or a next arrival."""
    wait_watcher_running(dep, BURST_DAG)
    warm = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(BURST_STEP, count=1)]
    wait_completed(dep, warm, timeout=240)  # the watcher's first round and the DAG's first run are not the burst's
    wait_watcher_resolved(dep, warm)
    created = dep.emulator.create_instances(BURST_STEP, count=count)
    ids = [int(i["IntegrationInstanceId"]) for i in created]
    started = time.monotonic()
    killed: dict[str, Any] = {}
    if kill_mid_burst:  # once the first run took its event over, the watcher is handing out the next ones
        wait_claimed(dep, ids[:1], variable_claims, timeout=120)
        dep.kill("triggerer")
        time.sleep(2)
        dep.restart("triggerer")
        killed = {"killed_after_s": round(time.monotonic() - started, 2)}
    wait_completed(dep, ids, timeout=timeout)
    wait_watcher_resolved(dep, ids)
    check = dep.check_instances(ids)
    handed = handed_out_in_events(dep)
    last = max(latencies(dep, ids))
    return {"ids": ids, "check": check, "in_several_events": [i for i in ids if handed.get(i, 0) > 1],
            "watcher_open": [i for i in watcher_claims(dep) if i in set(ids)],
            "last_creation_to_completed_s": round(last, 2), **killed}


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_a_burst_of_five_times_max_instances_completes_every_instance_once(embedded: Deployment,
                                                                           semantics: str) -> None:
    """Before, a burst larger than max_instances went out as back-to-back events; Airflow's queue row of the
    (Asset, DAG) pair kept the first one's time, the run consumed only that event, and the others waited for a next
    arrival (or the lease). A server that hands out its oldest open instance until it is completed gives one
    instance per drain: five of them make five events there."""
    embedded.emulator.update_settings(poll_semantics=semantics)
    try:
        count = 5 * BURST_MAX if semantics == "once" else 5
        result = burst_round(embedded, count, timeout=150)
    finally:
        embedded.emulator.update_settings(poll_semantics="once")
    assert_clean(result["check"])
    assert not result["in_several_events"] and not result["watcher_open"], result
    record_figures(f"embedded_event_burst_{semantics}", {
        "instances": len(result["ids"]), "max_instances": BURST_MAX, "poll_interval_s": 1,
        "last_creation_to_completed_s": result["last_creation_to_completed_s"], "lost": 0, "duplicated": 0})


def test_a_burst_survives_the_triggerer_killed_mid_burst(embedded: Deployment) -> None:
    """SIGKILL the triggerer once the burst's first run took its instances, restart it: every instance is
    still completed once (an event lost with the triggerer would be handed out again after the lease)."""
    result = burst_round(embedded, 5 * BURST_MAX, timeout=300, kill_mid_burst=True)
    assert_clean(result["check"])
    assert not result["watcher_open"], result
    record_figures("embedded_event_burst_triggerer_killed", {
        "instances": len(result["ids"]), "max_instances": BURST_MAX,
        "killed_after_s": result["killed_after_s"],
        "last_creation_to_completed_s": result["last_creation_to_completed_s"], "lost": 0, "duplicated": 0})


# -- Airflow's standard idiom: MessageQueueTrigger(scheme="workflowsoft") ---------------------------------------

MQ_DAG = "workflowsoft_notify_crm_on_arrival"
CRM_STEP = 21


def test_message_queue_trigger_example_dag_completes_each_instance_once(embedded: Deployment) -> None:
    watchers = "SELECT triggerer_id FROM trigger WHERE classpath LIKE '%WorkflowsoftIntegrationEventTrigger'"
    before = len(embedded.query(watchers))
    embedded.airflow("dags", "unpause", MQ_DAG)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the dag-processor registers the new watcher when it parses the DAG again
        rows = embedded.query(watchers)
        if len(rows) > before and all(r[0] is not None for r in rows):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the watcher of {MQ_DAG} is not running\n{embedded.log_tail()}")
    created = embedded.emulator.create_instances(CRM_STEP, count=6)
    ids = [int(i["IntegrationInstanceId"]) for i in created]
    wait_completed(embedded, ids, timeout=180)
    wait_watcher_resolved(embedded, ids)
    snapshot = {int(i["IntegrationInstanceId"]): i for i in embedded.emulator.snapshot()["instances"]}
    done = completions(embedded.emulator)
    assert all(done.get(i) == 1 for i in ids), done
    assert all(snapshot[i]["fields"].get("Status") == "Done" for i in ids), snapshot
    runs = embedded.query("SELECT run_type FROM dag_run WHERE dag_id=:d", d=MQ_DAG)
    assert runs and all(r[0] == "asset_triggered" for r in runs), runs
    assert not [i for i in watcher_claims(embedded) if i in set(ids)]
    assert not [i for i in embedded.open_claims() if i in set(ids)]
    embedded.airflow("dags", "pause", MQ_DAG)


# -- last in the module: it creates a Workflowsoft task, which the other checks count as unexpected ------------


def test_a_missed_deadline_creates_a_workflowsoft_task_from_the_triggerer(embedded: Deployment) -> None:
    run_id = embedded.trigger("deploy_deadline")
    deadline = time.monotonic() + 120
    tasks: list[Any] = []
    while time.monotonic() < deadline:
        tasks = [t for t in embedded.emulator.snapshot().get("tasks") or []
                 if t.get("title") == "Airflow DAG run missed its deadline: deploy_deadline"]
        if tasks:
            break
        embedded.check_alive()
        time.sleep(0.5)
    assert len(tasks) == 1, f"no task for the missed deadline\n{embedded.log_tail()}"
    assert run_id in tasks[0]["description"] and tasks[0]["assigned_user_id"] == 3 and tasks[0]["created_by"] == 1
    assert embedded.wait_run("deploy_deadline", run_id, timeout=120) == "success"
    callbacks = embedded.query("SELECT state FROM callback")
    assert [c[0] for c in callbacks] == ["success"], callbacks


# -- round trips: many runs each waiting for its own process at one step, a batch worker draining it too ------

ROUND_TRIP_STEP = 41


def round_trip_scenario(dep: Deployment) -> Any:
    """The demo scenario with the approval step reached only on an admin call (a person's decision)."""
    from airflow_provider_workflowsoft.emulator.scenario import load_scenario

    data = load_scenario(None).to_dict()
    data["process_diagrams"][3]["integration_steps"][0]["reached"] = "admin-call"
    previous = dep.emulator.state.scenario
    dep.emulator.state.scenario = load_scenario(data)
    return previous


@pytest.mark.skipif(os.environ.get("WFS_ROUND_TRIPS") != "1",
                    reason="many waiters on one step: set WFS_ROUND_TRIPS=1 (not yet seen green on a 2-core machine "
                           "under load, where Airflow's SQLite-backed components exit with 'database is locked')")
@pytest.mark.parametrize(("semantics", "waiters", "others"), [("once", 6, 3), ("until-completed", 3, 1)])
def test_many_waiters_and_a_batch_worker_on_one_step(embedded: Deployment, semantics: str, waiters: int,
                                                     others: int) -> None:
    """Runs of ``deploy_round_trip`` each wait (deferred, in the real triggerer) for their own process at step 41
    while ``deploy_round_trip_worker`` drains the step: each waiter completes exactly its own instance, every
    other instance is completed by the worker, none twice, no claim left open. A server that hands out the oldest
    open instance until it is completed shows one instance at a time, so waiters are served one after the other:
    fewer of them there."""
    previous = round_trip_scenario(embedded)
    embedded.emulator.update_settings(poll_semantics=semantics)
    try:
        state = embedded.emulator.state
        pids = [state.start_process({"TemplateId": 4}, "1")["Id"] for _ in range(waiters)]
        started = time.monotonic()
        runs = embedded.trigger_many("deploy_round_trip", [{"process_instance_id": p} for p in pids])
        for run_id in runs:
            embedded.wait_task_state("deploy_round_trip", run_id, "wait", {"deferred"}, timeout=300)
        deferred_s = time.monotonic() - started
        # Other processes reach the step first (older instances), then the waiters' processes.
        other_pids = [state.start_process({"TemplateId": 4}, "1")["Id"] for _ in range(others)]
        foreign = [embedded.emulator.reach(p)[0]["IntegrationInstanceId"] for p in other_pids]
        reached_at = time.monotonic()
        mine = {p: embedded.emulator.reach(p)[0]["IntegrationInstanceId"] for p in pids}
        workers = [embedded.trigger("deploy_round_trip_worker")]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            snapshot = {i["IntegrationInstanceId"]: i for i in embedded.emulator.snapshot()["instances"]}
            if all(snapshot[i]["status"] == "completed" for i in [*foreign, *mine.values()]):
                break
            if embedded.run_state("deploy_round_trip_worker", workers[-1]) in ("success", "failed"):
                assert embedded.run_state("deploy_round_trip_worker", workers[-1]) == "success", embedded.log_tail()
                if any(snapshot[i]["status"] != "completed" for i in foreign):
                    workers.append(embedded.trigger("deploy_round_trip_worker"))
            time.sleep(1)
        all_done_s = time.monotonic() - reached_at
        states = [embedded.wait_run("deploy_round_trip", r, timeout=120) for r in runs]
    finally:
        embedded.emulator.update_settings(poll_semantics="once")
        embedded.emulator.state.scenario = previous
    assert states == ["success"] * waiters, embedded.log_tail()
    snapshot = {i["IntegrationInstanceId"]: i for i in embedded.emulator.snapshot()["instances"]}
    for pid, iid in mine.items():  # each waiter's run completed exactly its own instance
        assert snapshot[iid]["status"] == "completed" and snapshot[iid]["fields"]["Reply"] == f"waiter of {pid}"
    for iid in foreign:  # every other instance reached the worker
        assert snapshot[iid]["status"] == "completed" and snapshot[iid]["fields"]["Reply"] == "worker"
    done = completions(embedded.emulator)
    assert all(done.get(i) == 1 for i in [*foreign, *mine.values()]), done
    assert not [i for i in embedded.open_claims() if i in set(mine.values()) | set(foreign)]
    record_figures(f"embedded_round_trips_{semantics}", {
        "waiters": waiters, "others": others, "trigger_to_all_deferred_s": round(deferred_s, 1),
        "reached_to_all_completed_s": round(all_done_s, 1), "worker_runs": len(workers)})
