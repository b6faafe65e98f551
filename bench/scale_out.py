"""Scale-out on the distributed engine: several batch workers on one step as mapped task instances spread over
two Celery workers, measured.

Runs the deployment test ``test_scale_out_mapped_batch_workers`` (tests/deployment/test_distributed.py: CeleryExecutor,
Redis, a fresh PostgreSQL database, two Celery workers of concurrency 2; the DAG ``deploy_scale_out`` of
``tests/deployment/dags``) with ``SCALE_OUT_INSTANCES`` instances per run (default 2,000), 1, 2 and 4 mapped workers
(``SCALE_OUT_WORKERS``), 20 ms added per API answer and a tenant rate limit of ``SCALE_OUT_RATE_LIMIT`` requests per
second (default 200; 0: none). In the 4-worker run one Celery worker is SIGKILLed with its process tree a third into
the run; a next run (one worker) takes the dead workers' claims over after the lease (5 s) and completes the rest.
The test checks the outcome; this script reads the figures it records (tests/output/deployment_figures.json),
prints them and writes the "Scale-out" section of docs/benchmarks.md (``python bench/scale_out.py``; needs
PostgreSQL and Redis, like ``make test-deployment``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIGURES = REPO / "tests" / "output" / "deployment_figures.json"
RESULTS = REPO / "tests" / "output" / "scale_out.json"  # one entry per rate limit, kept across invocations
HEADING = "## Scale-out"
TEST = "tests/deployment/test_distributed.py::test_scale_out_mapped_batch_workers"


def measure(rate_limit: str) -> dict[str, Any]:
    """One run of the test (its own deployment) at ``rate_limit`` requests per second ("0": none)."""
    env = {**os.environ, "WFS_DEPLOYMENT": "1", "SCALE_OUT_RATE_LIMIT": rate_limit}
    env.setdefault("SCALE_OUT_INSTANCES", "2000")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "deployment", "-s", TEST],
                   cwd=REPO, env=env, check=True)
    return dict(json.loads(FIGURES.read_text())["distributed_scale_out"])


def rows_of(figures: dict[str, Any]) -> list[str]:
    limit = figures.get("rate_limit_per_s")
    rows = []
    for workers, row in sorted(figures["runs"].items(), key=lambda kv: int(kv[0])):
        first = row["first_run"]
        killed = first.get("at_kill")
        note = "-"
        if killed:
            note = (f"`{killed['killed_worker']}` SIGKILLed with map indexes {killed['killed_map_indexes']} at "
                    f"{killed['completed']} completed ({len(killed['unclaimed_in_flight'])} handed out, not yet "
                    f"claimed); next run: {row['next_run']['processed']} processed, kill -> end "
                    f"{first['kill_to_run_end_s'] + row['next_run']['trigger_to_end_s']:.0f} s")
        tenant = f"{limit:g}" if limit else "none"
        rows.append(f"| {tenant} | {workers} | {row['instances']} | {row['instances_per_s']} | {row['drain_s']} | "
                    f"{row['wall_s']} | {row['refused_429']} | {row['lost']} | {row['doubled']} | {row['yielded']} | "
                    f"{row['open_claims']} | {note} |")
    return rows


def section(results: dict[str, dict[str, Any]]) -> str:
    figures = next(iter(results.values()))
    rows = [r for _, f in sorted(results.items(), key=lambda kv: -float(kv[0])) for r in rows_of(f)]
    return "\n".join([
        HEADING,
        "",
        "`python bench/scale_out.py` (the deployment test `test_scale_out_mapped_batch_workers`): the batch operator "
        "mapped over N shares (`WorkflowsoftIntegrationWorkerOperator.partial(...).expand(max_instances=...)`, "
        f"{figures['threads_per_worker']} threads each; DAG `deploy_scale_out` of `tests/deployment/dags`) under "
        "CeleryExecutor with Redis, a fresh PostgreSQL database and two Celery workers (concurrency 2), against the "
        f"emulator handing every instance out once, {figures['api_latency_ms']} ms added per API answer, "
        "with a tenant rate limit (token bucket, one second of burst; 429 with `Retry-After`) or none. "
        f"{figures['instances_per_run']} new instances per row. *instances/s*: completed / drain time (emulator's "
        "clock, first handed out to last completed; in the SIGKILL rows it includes the scheduler noticing the "
        "dead task processes and the next run); *wall*: trigger to the end of the run(s); *429*: the emulator's "
        "refusals; *lost*: never completed; *doubled*: completed more than once (emulator's request log); "
        "*yielded*: claims a worker handed back because another worker's record held them too (claims before "
        "hand-over); *open claims*: left in the ledger at the end. Lease 5 s.",
        "",
        "| tenant limit (req/s) | mapped workers | instances | instances/s | drain (s) | wall (s) | 429 | lost "
        "| doubled | yielded | open claims | SIGKILL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "Each mapped worker is its own process with its own client limiter, so the workers learn a tenant's limit "
        "each on its own (the connection's `max_requests_per_second` is per worker: divide the tenant's limit by "
        "the number of workers). At 200 requests per second one worker already reaches the limit (about four "
        "requests per instance), so more workers cannot go faster; without a limit, on this 2-core machine the "
        "emulator, Airflow's components and every task process share the same two cores, so a second worker adds "
        "little and the figures say nothing about a larger deployment. *yielded* is 0 here: a server that hands "
        "an instance out once never gives one to two workers; the check matters for a server that hands the oldest "
        "open instance out until it is completed. Lost in the SIGKILL rows: only instances the server had handed "
        "out to the killed processes and no claims record held yet, at most `max_unclaimed` per killed map index "
        "([reliability](reliability.md#scale-out-a-celery-worker-killed-under-mapped-batch-workers)).",
        "",
    ])


def main() -> int:
    from benchmarks_doc import publish  # bench/ is on sys.path when this script runs

    results: dict[str, dict[str, Any]] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for limit in os.environ.get("SCALE_OUT_RATE_LIMITS", "200,0").split(","):
        results[str(float(limit))] = measure(limit)
        print(json.dumps(results[str(float(limit))], indent=2), flush=True)
        RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return publish(section(results), HEADING)


if __name__ == "__main__":
    sys.exit(main())
