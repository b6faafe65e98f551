"""Event-driven runs under Airflow's real components: the time from an integration instance's creation to its
completion, with the example DAG ``dags/workflowsoft_enrich_events_on_arrival.py`` scheduled on the step's
Asset (its watcher in the triggerer, poll interval 2 s) and the batch worker completing what a run receives.

Starts the embedded deployment of the deployment tests (scheduler, dag-processor, triggerer, API server;
LocalExecutor, SQLite; each its own process on free loopback ports) against the emulator with 20 ms added
per request, then measures, from the emulator's own clock:

* one instance first (the fresh deployment's first DAG run, reported apart: it takes longer than later runs);
* ``EVENT_SINGLES`` (default 10) instances created one at a time, each after the previous one was completed;
* a burst of ``EVENT_BURST`` (default 50) instances created at once.

Prints the numbers and writes the "Event-driven runs" section of docs/benchmarks.md (``make bench`` writes it
with the rest of the file; ``python bench/event_driven.py`` rewrites only that section).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks_doc import publish  # noqa: E402 - bench/ is this script's folder (on the path)

HEADING = "## Event-driven runs"
EVENT_DAG = "workflowsoft_enrich_events_on_arrival"
POLL_INTERVAL_S = 2.0  # the deployment's WORKFLOWSOFT_POLL_INTERVAL (tests/deployment/conftest.py)
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "20"))


def measure(singles: int = 10, burst: int = 50) -> dict[str, Any]:
    from airflow_provider_workflowsoft.emulator import EmulatorServer
    from tests.deployment.conftest import (
        STEP,
        completions,
        embedded_deployment,
        latencies,
        wait_completed,
        wait_watcher_running,
    )

    with EmulatorServer(poll_semantics="once") as emulator, tempfile.TemporaryDirectory() as tmp:
        emulator.set_faults(latency_ms=LATENCY_MS)
        with embedded_deployment(Path(tmp), emulator) as dep:
            watcher_s = wait_watcher_running(dep, EVENT_DAG)
            # The first run of a fresh deployment also starts the executor's worker processes: measured apart.
            first_ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=1)]
            wait_completed(dep, first_ids, timeout=240)
            single_ids: list[int] = []
            for _ in range(singles):
                ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=1)]
                wait_completed(dep, ids, timeout=240)
                single_ids += ids
                time.sleep(0.5)  # a new instance at a random point of the watcher's poll cycle
            burst_ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=burst)]
            started = time.monotonic()
            wait_completed(dep, burst_ids, timeout=600)
            burst_wall = time.monotonic() - started
            runs = dep.query("SELECT count(*) FROM dag_run WHERE dag_id=:d", d=EVENT_DAG)[0][0]
            done = completions(emulator)
            return {
                "startup_s": round(dep.startup_s, 1),  # type: ignore[attr-defined]
                "unpause_to_watcher_running_s": round(watcher_s, 1),
                "first": round(latencies(dep, first_ids)[0], 2),
                "single": [round(x, 2) for x in latencies(dep, single_ids)],
                "burst": burst,
                "burst_latency": [round(x, 2) for x in latencies(dep, burst_ids)],
                "burst_wall_s": round(burst_wall, 2),
                "runs": int(runs),
                "completed_twice": sum(1 for i in first_ids + single_ids + burst_ids if done.get(i, 0) > 1),
                "not_completed": sum(1 for i in first_ids + single_ids + burst_ids if done.get(i, 0) == 0),
            }


def section(results: dict[str, Any]) -> str:
    single = results["single"]
    burst = results["burst_latency"]
    target = POLL_INTERVAL_S + 10
    verdict = "met" if single and max(single) <= target else "NOT met"
    return "\n".join([
        HEADING,
        "",
        "`python bench/event_driven.py` (also run by `make bench`): the example DAG "
        "`dags/workflowsoft_enrich_events_on_arrival.py`, scheduled on the step's Asset, under Airflow's real "
        "scheduler, dag-processor and triggerer (LocalExecutor, SQLite, each its own process; the deployment of "
        "`tests/deployment`), against the emulator with "
        f"{LATENCY_MS} ms added per request. Watcher poll interval {POLL_INTERVAL_S:g} s; times from the emulator's "
        "clock, from an instance's creation to its completion by the DAG run's batch worker.",
        "",
        "| Measurement | Value |",
        "|---|---|",
        f"| {len(single)} instances, one at a time: creation -> completed | min {min(single):.1f} s, median "
        f"{statistics.median(single):.1f} s, max {max(single):.1f} s |",
        f"| Burst of {results['burst']} created at once: creation -> completed | first {min(burst):.1f} s, "
        f"last {max(burst):.1f} s |",
        f"| The first instance after the watcher started (the fresh deployment's first DAG run; later runs "
        f"do not pay this) | {results['first']:.1f} s |",
        f"| DAG runs for all {1 + len(single) + results['burst']} instances | {results['runs']} |",
        f"| Completed twice / not completed | {results['completed_twice']} / {results['not_completed']} |",
        "| Unpausing the DAG -> its watcher running in the triggerer | "
        f"{results['unpause_to_watcher_running_s']:.0f} s (the dag-processor registers watchers when it parses "
        "an unpaused DAG) |",
        "",
        f"Target: at most the poll interval plus 10 s ({target:g} s) from creation to completion, one at a time: "
        f"**{verdict}** (max {max(single):.1f} s). Where the time goes: up to one poll interval until the "
        "watcher's next poll, then Airflow's scheduling of the asset-triggered run and the start of its two task "
        "processes (about 2 s each here), then four requests per instance.",
        "",
    ])


def main() -> int:
    results = measure(int(os.environ.get("EVENT_SINGLES", "10")), int(os.environ.get("EVENT_BURST", "50")))
    print(results, flush=True)
    return publish(section(results), HEADING)


if __name__ == "__main__":
    sys.exit(main())
