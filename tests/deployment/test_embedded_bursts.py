"""Embedded deployment (as tests/deployment/test_embedded.py, a deployment of its own so that pytest-xdist runs it
beside the others): bursts of five times a watcher's ``max_instances`` (both server readings, the triggerer killed
mid-burst), the ``MessageQueueTrigger`` example DAG, and a deadline alert creating a Workflowsoft task."""


from __future__ import annotations

import time
from typing import Any

import pytest

from tests.deployment.conftest import (
    BURST_STEP,
    Deployment,
    assert_clean,
    completions,
    handed_out_in_events,
    latencies,
    record_figures,
    variable_claims,
    wait_claimed,
    wait_completed,
    wait_watcher_resolved,
    wait_watcher_running,
    watcher_claims,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]


# -- bursts larger than max_instances: one event per run, none waits for a next arrival ----------------------

BURST_DAG = "deploy_burst"
BURST_MAX = 4  # deploy_burst's max_instances (tests/deployment/dags)
#: A burst of five times ``max_instances``: five events back to back, the size the burst guarantee is stated for
#: (bench/event_bursts.py measures 1x, 2x and 5x).
BURST_FACTOR = 5


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
        count = BURST_FACTOR * BURST_MAX if semantics == "once" else BURST_FACTOR
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
    result = burst_round(embedded, BURST_FACTOR * BURST_MAX, timeout=300, kill_mid_burst=True)
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
