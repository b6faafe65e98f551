"""Event-driven runs on Airflow 3.1 under its real scheduler, dag-processor and triggerer (LocalExecutor, PostgreSQL
when reachable): bursts of five times a watcher's ``max_instances`` then silence, the triggerer killed mid-burst.

3.1 has no Asset state store and its triggerer lists no Variables: the watcher keeps its record in a Variable and reads
the ack slot each event names (docs/reliability.md). Only this suite's DAGs are loaded (two of the repository's example
DAGs use what 3.1 lacks). Skipped on any other Airflow (the same scenarios on 3.3: test_embedded_bursts.py).
``make test-deployment-3.1`` runs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_3_PLUS, airflow_version
from tests.deployment.conftest import (
    BURST_STEP,
    Deployment,
    ack_slots,
    assert_clean,
    embedded_deployment,
    handed_out_in_events,
    iso_to_epoch,
    latencies,
    record_figures,
    run_claims,
    wait_completed,
    wait_watcher_running,
    wait_watcher_variables_resolved,
    watcher_variable_claims,
)

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS or AIRFLOW_V_3_3_PLUS,
                       reason=f"the Airflow 3.1 form of the asset watcher (Variables and ack slots); this is Airflow "
                              f"{airflow_version()} (3.3: test_embedded_bursts.py)"),
]

BURST_DAG = "deploy_burst"
BURST_MAX = 4  # deploy_burst's max_instances (tests/deployment/dags)
LEASE_S = 90  # deploy_burst's reclaim_after here: longer than an event's wait for its run plus the run


@pytest.fixture(scope="module")
def embedded31(tmp_path_factory: pytest.TempPathFactory, deploy_emulator: Any) -> Iterator[Deployment]:
    previous = os.environ.get("WFS_DEPLOY_BURST_LEASE_S")
    os.environ["WFS_DEPLOY_BURST_LEASE_S"] = str(LEASE_S)  # read by the DAG file in the deployment's processes
    try:
        with embedded_deployment(tmp_path_factory.mktemp("embedded31"), deploy_emulator, repo_dags=False) as dep:
            yield dep
    finally:
        if previous is None:
            os.environ.pop("WFS_DEPLOY_BURST_LEASE_S", None)
        else:
            os.environ["WFS_DEPLOY_BURST_LEASE_S"] = previous


def burst_round(dep: Deployment, count: int, timeout: float, kill_mid_burst: bool = False) -> dict[str, Any]:
    """Create ``count`` instances of step 31 at once, then silence; every one must be completed once."""
    wait_watcher_running(dep, BURST_DAG)
    warm = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(BURST_STEP, count=1)]
    wait_completed(dep, warm, timeout=240)  # the watcher's first round and the DAG's first run are not the burst's
    wait_watcher_variables_resolved(dep, warm)
    ids = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(BURST_STEP, count=count)]
    started = time.monotonic()
    killed: dict[str, Any] = {}
    if kill_mid_burst:  # once the first run took its event over, the watcher is handing out the next ones
        deadline = time.monotonic() + 120
        while not run_claims(dep) & set(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        dep.kill("triggerer")
        time.sleep(2)
        dep.restart("triggerer")
        killed = {"killed_after_s": round(time.monotonic() - started, 2)}
    wait_completed(dep, ids, timeout=timeout)
    completed_s = round(time.monotonic() - started, 2)
    resolved = wait_watcher_variables_resolved(dep, ids)
    time.sleep(5)  # silence: nothing more is handed out
    handed = handed_out_in_events(dep)
    return {"ids": ids, "check": dep.check_instances(ids),
            "in_several_events": [i for i in ids if handed.get(i, 0) > 1],
            "watcher_open": sorted(watcher_variable_claims(dep) & set(ids)), "ack_slots_left": sorted(ack_slots(dep)),
            "resolved": resolved, "last_creation_to_completed_s": round(max(latencies(dep, ids)), 2),
            "burst_to_all_completed_s": completed_s, **killed}


@pytest.mark.parametrize(("semantics", "count"), [("once", BURST_MAX), ("once", 2 * BURST_MAX),
                                                  ("once", 5 * BURST_MAX), ("until-completed", 5)])
def test_a_burst_completes_every_instance_once_then_silence(embedded31: Deployment, semantics: str,
                                                            count: int) -> None:
    """1x, 2x and 5x max_instances on a server that hands out once; five on one that repeats its oldest open instance
    until completed (one per drain). Within less than the lease: none waits for a re-offer or a next arrival."""
    embedded31.emulator.update_settings(poll_semantics=semantics)
    try:
        result = burst_round(embedded31, count, timeout=LEASE_S - 10)
    finally:
        embedded31.emulator.update_settings(poll_semantics="once")
    assert_clean(result["check"])
    assert not result["in_several_events"] and not result["watcher_open"] and not result["ack_slots_left"], result
    record_figures(f"embedded31_event_burst_{semantics}_{count}", {
        "airflow": airflow_version(), "instances": count, "max_instances": BURST_MAX, "poll_interval_s": 1,
        "last_creation_to_completed_s": result["last_creation_to_completed_s"], "lost": 0, "duplicated": 0})


def answers_in_flight(dep: Deployment, ids: list[int], kill_at: float) -> list[int]:
    """The instances the server handed out that no event carried and no record claimed: answers the triggerer received
    (or the server sent) in the moment it was killed, before their claim write (the one window that remains against
    a server that hands out once: docs/reliability.md, "What remains")."""
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    handed = handed_out_in_events(dep)
    claimed = {int(i) for r in dep.claim_records().values() if isinstance(r, dict) for i in (r.get("claims") or {})}
    return [i for i in ids if snapshot[i]["status"] == "handed_out" and i not in handed and i not in claimed
            and abs(iso_to_epoch(snapshot[i]["handed_out_at"]) - kill_at) < 5]


@pytest.mark.parametrize("semantics", ["once", "until-completed"])
def test_a_burst_survives_the_triggerer_killed_mid_burst(embedded31: Deployment, semantics: str) -> None:
    """SIGKILL the triggerer once the burst's first run took its instances, restart it: every instance is completed
    once; claims whose event died with the triggerer are handed out again after the lease. Against a server that
    hands out once, an answer in flight at the kill (received, not yet claimed) cannot come back: at most one, and
    only such a one, may stay handed out; a server that repeats it until completed hands it out again."""
    embedded31.emulator.update_settings(poll_semantics=semantics)
    count = 5 * BURST_MAX if semantics == "once" else 5
    try:
        wait_watcher_running(embedded31, BURST_DAG)
        warm = [int(i["IntegrationInstanceId"]) for i in embedded31.emulator.create_instances(BURST_STEP, count=1)]
        wait_completed(embedded31, warm, timeout=240)
        wait_watcher_variables_resolved(embedded31, warm)
        ids = [int(i["IntegrationInstanceId"]) for i in embedded31.emulator.create_instances(BURST_STEP, count=count)]
        started = time.monotonic()
        deadline = started + 120
        while not run_claims(embedded31) & set(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_at = time.time()
        embedded31.kill("triggerer")
        time.sleep(2)
        embedded31.restart("triggerer")
        killed_after = round(time.monotonic() - started, 2)
        deadline = time.monotonic() + LEASE_S + 150
        in_flight: list[int] = []
        while time.monotonic() < deadline:
            in_flight = answers_in_flight(embedded31, ids, kill_at) if semantics == "once" else []
            states = {int(i["IntegrationInstanceId"]): i["status"] for i in embedded31.emulator.snapshot()["instances"]}
            if all(states[i] == "completed" for i in ids if i not in in_flight):
                break
            embedded31.check_alive()
            time.sleep(1)
        done = [i for i in ids if i not in in_flight]
        wait_completed(embedded31, done, timeout=5)
        resolved = wait_watcher_variables_resolved(embedded31, ids)
    finally:
        embedded31.emulator.update_settings(poll_semantics="once")
    assert len(in_flight) <= 1, in_flight
    check = embedded31.check_instances(done)
    assert_clean(check)
    assert resolved, {"watcher": sorted(watcher_variable_claims(embedded31) & set(ids)),
                      "ack_slots": sorted(ack_slots(embedded31))}
    record_figures(f"embedded31_event_burst_triggerer_killed_{semantics}", {
        "airflow": airflow_version(), "instances": count, "max_instances": BURST_MAX, "lease_s": LEASE_S,
        "killed_after_s": killed_after, "answers_in_flight_at_the_kill": in_flight,
        "last_creation_to_completed_s": round(max(latencies(embedded31, done)), 2), "lost_claims": 0,
        "duplicated": 0})
