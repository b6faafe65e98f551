"""The worker engine alone without a rate limit, for comparing two installations run after one another.

``python bench/limiter_overhead.py`` runs ``WorkerEngine`` (32 workers, pollers = workers, claims in memory) on
``BENCH_N`` (default 500) instances against the emulator in its own process (``--latency-ms 20``, no rate limit,
from this checkout) and prints one JSON line: wall seconds and client CPU seconds, kept in
``bench/rate_limit_results.json`` under ``overhead`` and ``BENCH_LABEL`` (default ``after``). Run by another
installation's Python it measures that installation's provider, so alternating the two under the same load
compares them fairly (the command in docs/benchmarks.md, "Rate limits").
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rate_limit import RESULTS, Emulator  # bench/ is put on the path just above

N = int(os.environ.get("BENCH_N", "500"))


def enrich(fields: dict, instance: dict) -> dict:
    return {"Venue code": f"V-{instance['IntegrationInstanceId']}", "Attendees": 42}


def main() -> int:
    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
    from airflow_provider_workflowsoft.api.config import ClientConfig
    try:
        from airflow_provider_workflowsoft.worker.engine import WorkerEngine
        step = {"integration_step_id": 11}
    except ImportError:  # a 0.4 checkout (docs/benchmarks.md's "before" run): the engine's and the step's names then
        from airflow_provider_workflowsoft.worker.engine import BatchEngine as WorkerEngine  # type: ignore[no-redef]
        step = {"integration_diagram_id": 11}

    emu = Emulator()
    try:
        emu.fresh(0, N)
        client = WorkflowsoftClient(ClientConfig(base_url=emu.base_url, api_token="demo-token", pool_size=64))
        engine = WorkerEngine(client, enrich, **step, max_instances=N, max_workers=32,
                             progress_interval=None)
        cpu, started = time.process_time(), time.perf_counter()
        report = engine.run()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert len(report["succeeded"]) == N, report["failed"][:3]
        row = {"wall": round(wall, 2), "cpu": round(cpu, 2), "n": N}
        print(json.dumps(row))
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results.setdefault("overhead", {}).setdefault(os.environ.get("BENCH_LABEL", "after"), []).append(row)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
