"""Round trips under Airflow's real components: the time from a process reaching an integration step to the run
waiting for that process completing the step's instance, with 1 and with 20 runs waiting at once.

Starts the embedded deployment of the deployment tests (scheduler, dag-processor, triggerer, API server;
LocalExecutor on a fresh PostgreSQL database with 4 task slots when PostgreSQL is reachable, else SQLite with 2; each
its own process on free loopback ports) against the emulator with 20 ms added per request. The test DAG
``deploy_round_trip`` (``tests/deployment/dags``) is one waiter: the deferrable sensor with
``process_instance_id`` (poll interval ``ROUND_TRIP_POLL_S``, default 5 s), then a completion of its instance.
For each size, the processes are started, one run per process is triggered, and once every sensor is deferred
the processes reach the step at once (``POST /_emulator/processes/<id>/reach``); times come from the emulator's
clock, from the instance's creation to its completion.

Prints the numbers and writes the "Round trips" section of docs/benchmarks.md (``python bench/round_trip.py``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HEADING = "## Round trips"
POLL_S = float(os.environ.get("ROUND_TRIP_POLL_S", "5"))
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "20"))
SIZES = [int(n) for n in os.environ.get("ROUND_TRIP_SIZES", "1,20").split(",")]


def measure() -> tuple[dict[int, list[float]], str]:
    from airflow_provider_workflowsoft.emulator import EmulatorServer
    from airflow_provider_workflowsoft.emulator.scenario import load_scenario
    from tests.deployment.conftest import embedded_deployment, latencies

    os.environ["WFS_DEPLOY_ROUND_TRIP_POLL_S"] = str(POLL_S)  # read by the DAG file in every component
    data = load_scenario(None).to_dict()
    data["process_diagrams"][3]["integration_steps"][0]["reached"] = "admin-call"
    results: dict[int, list[float]] = {}
    with EmulatorServer(scenario=data, poll_semantics="once") as emulator, tempfile.TemporaryDirectory() as tmp:
        emulator.set_faults(latency_ms=LATENCY_MS)
        with embedded_deployment(Path(tmp), emulator) as dep:
            for size in [1, *SIZES]:  # a first round warms the deployment up (the executor's worker processes)
                pids = [emulator.state.start_process({"TemplateId": 4}, "1")["Id"] for _ in range(size)]
                runs = dep.trigger_many("deploy_round_trip", [{"process_instance_id": p} for p in pids])
                for run_id in runs:
                    dep.wait_task_state("deploy_round_trip", run_id, "wait", {"deferred"}, timeout=600)
                time.sleep(POLL_S)  # every trigger polling on its own cycle
                ids = [emulator.reach(p)[0]["IntegrationInstanceId"] for p in pids]
                for run_id in runs:
                    assert dep.wait_run("deploy_round_trip", run_id, timeout=600) == "success", dep.log_tail()
                results.setdefault(size, latencies(dep, ids))  # the warm-up round is not kept
            database = f"{dep.database} with {dep.parallelism} task slots"  # type: ignore[attr-defined]
    return results, database


def section(results: dict[int, list[float]], database: str) -> str:
    rows = [f"| {size} | min {min(v):.1f} s, median {statistics.median(v):.1f} s, max {max(v):.1f} s |"
            for size, v in sorted(results.items())]
    return "\n".join([
        HEADING,
        "",
        "`python bench/round_trip.py`: runs of the test DAG `deploy_round_trip` (the deferrable sensor with "
        "`process_instance_id`, then a completion of its instance) under Airflow's real scheduler, dag-processor and "
        f"triggerer (LocalExecutor, {database}; the deployment of `tests/deployment`), against the "
        f"emulator with {LATENCY_MS} ms added per request. Poll interval {POLL_S:g} s. Every sensor is deferred "
        "before the processes reach the step (all at once, by the emulator's admin call); times from the emulator's "
        "clock, from the instance's creation (the process reaching the step) to its completion by the waiting run.",
        "",
        "| Runs waiting at once | Process reaches the step -> its run completed it |",
        "|---|---|",
        *rows,
        "",
        "Where the time goes: up to one poll interval until the trigger's next poll, the task resuming after the "
        "deferral and the completion task (two task processes, each a few seconds here); with 20 waiters the 40 "
        "task processes queue for the executor's task slots.",
        "",
    ])


def main() -> int:
    from benchmarks_doc import publish  # bench/ is on sys.path when this script runs

    results, database = measure()
    print(results, database, flush=True)
    return publish(section(results, database), HEADING)


if __name__ == "__main__":
    sys.exit(main())
