"""Embedded deployment (as tests/deployment/test_embedded.py, a deployment of its own): runs each waiting, deferred
in the real triggerer, for their own process at one integration step while a batch worker drains that step.

On PostgreSQL only (the embedded deployment's database when PostgreSQL is reachable): on SQLite, Airflow's scheduler
was seen to exit with ``database is locked`` when 20 runs start at once on a loaded 2-core machine, so the module
skips there, naming why the deployment would be on SQLite. 10 waiters here, over twice the deployment's 4 task slots
(each waiter is two task processes); ``bench/round_trip.py`` measures 20."""


from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deployment.conftest import (
    Deployment,
    completions,
    embedded_database,
    record_figures,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]


# -- round trips: many runs each waiting for its own process at one step, a batch worker draining it too ------

ROUND_TRIP_STEP = 41


@pytest.fixture(scope="module", autouse=True)
def _on_postgres() -> Iterator[None]:
    """Skip before the deployment starts when it would run on SQLite."""
    why = embedded_database()
    if why is not None:
        pytest.skip(f"10 waiters need the embedded deployment on PostgreSQL (SQLite was seen to exit with "
                    f"'database is locked' when 20 runs start at once); it would run on SQLite: {why}")
    yield


def round_trip_scenario(dep: Deployment) -> Any:
    """The demo scenario with the approval step reached only on an admin call (a person's decision)."""
    from airflow_provider_workflowsoft.emulator.scenario import load_scenario

    data = load_scenario(None).to_dict()
    data["process_diagrams"][3]["integration_steps"][0]["reached"] = "admin-call"
    previous = dep.emulator.state.scenario
    dep.emulator.state.scenario = load_scenario(data)
    return previous


@pytest.mark.parametrize(("semantics", "waiters", "others"), [("once", 10, 5), ("until-completed", 5, 2)])
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
        "database": embedded.database, "parallelism": embedded.parallelism,  # type: ignore[attr-defined]
        "waiters": waiters, "others": others, "trigger_to_all_deferred_s": round(deferred_s, 1),
        "reached_to_all_completed_s": round(all_done_s, 1), "worker_runs": len(workers)})
