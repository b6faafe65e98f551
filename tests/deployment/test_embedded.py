"""Embedded deployment (LocalExecutor, SQLite; separate scheduler, dag-processor, triggerer, API server):
the deferrable sensor waits in the real triggerer and a mapped completion finishes what it received; the
triggerer dies right after a poll; the event-driven example DAG runs on its Asset watcher (one instance at
a time, a burst of 20, the triggerer killed after a poll with both server readings); bursts of five times a watcher's
``max_instances`` (both server readings, and the triggerer killed mid-burst); the ``MessageQueueTrigger`` example DAG;
a deadline alert creating a task from the triggerer; the batch worker's metrics reach a StatsD socket."""

from __future__ import annotations

import time

import pytest

from tests.deployment.conftest import (
    EVENT_DAG,
    STEP,
    Deployment,
    assert_clean,
    check_event_instances,
    deferred_sensor_round,
    event_runs,
    latencies,
    record_figures,
    wait_claimed,
    wait_completed,
    wait_watcher_resolved,
    wait_watcher_running,
    watcher_claims,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]

EVENT_BURST = 20


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
    # A burst of 20 (bench/event_driven.py measures 50): every one completed once, across however many runs
    # Airflow makes.
    runs_before = len(event_runs(embedded))
    created = embedded.emulator.create_instances(STEP, count=EVENT_BURST)
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
        "burst": EVENT_BURST, "burst_runs": len(runs) - runs_before, "burst_all_completed_s": round(burst_s, 2),
        "burst_creation_to_completed_s_max": round(max(burst_latency), 2),
        "lost": 0, "duplicated": 0,
    })


# 10 instances from a server that hands each out once, 5 from one that repeats the oldest open instance until it is
# completed (that server serves one instance, and so one run, at a time: 10 took 80 s there).
@pytest.mark.parametrize(("semantics", "count"), [("once", 10), ("until-completed", 5)])
def test_event_watcher_loses_nothing_when_the_triggerer_dies_after_a_poll(embedded: Deployment, semantics: str,
                                                                          count: int) -> None:
    """SIGKILL the triggerer right after the watcher's polls returned instances (its claims record holds them,
    the event may not be stored yet): after its restart every
    instance is still completed exactly once (a claim whose event was lost is handed out again after the
    45 s lease; one whose event was stored is completed by its run and never handed out again)."""
    wait_watcher_running(embedded, EVENT_DAG)
    embedded.emulator.update_settings(poll_semantics=semantics)
    try:
        created = embedded.emulator.create_instances(STEP, count=count)
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
        "instances": count, "kill_to_all_completed_s": round(recovered_s, 2), "lost": 0, "duplicated": 0,
        "in_several_events": 0})
