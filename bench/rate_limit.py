"""The README's batch worker against a tenant's rate limit: the share of requests refused with 429, and the run time.

``@task.workflowsoft_worker(integration_step_id=11, max_instances=N, max_workers=32)`` (``bench/dags/
bench_batch_operator.py``) runs in ``airflow dags test`` against the emulator in its own process
(``python -m airflow_provider_workflowsoft.emulator --latency-ms 20 --rate-limit R``: a token bucket of R
requests per second for the whole tenant, one second's worth of burst, over it 429 with ``Retry-After`` in whole
seconds), for each row of ``SCENARIOS``. The emulator's own counts (``GET /_emulator/rate-limit``) give the
requests it admitted and those it refused; the operator's report gives its seconds.

Targets: at most 2 % of the requests refused with 429, and the run within 1.2x of (admitted requests / rate).

The ``airflow`` command run is the one next to the interpreter (``BENCH_AIRFLOW`` names another), so the script run by
another installation's Python measures that installation of the provider (the code before a change:
``BENCH_LABEL=before <other checkout>/.venv/bin/python bench/rate_limit.py``; the emulator always comes from this
checkout). ``BENCH_LABEL`` names the code measured (default ``after``); ``BENCH_RATE_SCENARIOS`` the runs
(``limit:instances,...``, default ``200:500,50:200,0:500``; limit 0: none); ``BENCH_RATE_REPORT_ONLY=1`` only
rewrites the section from the kept results. Each run keeps its rows in
``bench/rate_limit_results.json`` under its label and rewrites the "Rate limits" section of docs/benchmarks.md
from every label there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchmarks_doc import publish, write_section  # noqa: E402 - bench/ is put on the path just above
from run_all import STEP, airflow_env  # noqa: E402

HEADING = "## Rate limits"
RESULTS = REPO / "bench" / "rate_limit_results.json"
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "20"))
WORKERS = int(os.environ.get("BENCH_RATE_WORKERS", "32"))
AIRFLOW_BIN = os.environ.get("BENCH_AIRFLOW") or str(Path(sys.executable).with_name("airflow"))
LABEL = os.environ.get("BENCH_LABEL", "after")
#: (tenant's limit in requests per second, 0: none; instances; the connection's max_requests_per_second)
SCENARIOS: tuple[tuple[float, int, float | None], ...] = tuple(
    (float(limit), int(n), None) for limit, n in (
        item.split(":") for item in os.environ.get("BENCH_RATE_SCENARIOS", "200:500,50:200,0:500").split(",")))
KNOWN_LIMIT_SCENARIOS: tuple[tuple[float, int, float | None], ...] = ((200, 500, 200),)
SUMMARY = re.compile(r"Processed (\d+) integration instance\(s\) in ([\d.]+) s: (\d+) succeeded, (\d+) failed")


class Emulator:
    """The emulator as its own process, driven through its admin endpoints."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="wfs-bench-rate-"))
        port_file = self._dir / "port"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_workflowsoft.emulator", "--port", "0", "--quiet",
             "--port-file", str(port_file), "--latency-ms", str(LATENCY_MS)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def admin(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + "/_emulator/" + route, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def fresh(self, limit: float, count: int) -> None:
        self.admin("POST", "reset")
        self.admin("POST", "rate-limit", {"requests_per_second": limit})
        self.admin("POST", "instances", {"integration_step_id": STEP, "count": count})
        self.admin("DELETE", "requests")  # the counts start here

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def run(emu: Emulator, env: dict[str, str], limit: float, n: int, known: float | None) -> dict[str, Any]:
    emu.fresh(limit, n)
    conn = {"conn_type": "workflowsoft", "host": emu.base_url, "password": "demo-token"}
    if known:
        conn["extra"] = json.dumps({"max_requests_per_second": known})
    run_env = {**env, "BENCH_DAG_N": str(n), "BENCH_DAG_WORKERS": str(WORKERS),
               "AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT": json.dumps(conn)}
    result = subprocess.run([AIRFLOW_BIN, "dags", "test", "bench_batch_operator"], env=run_env,
                            capture_output=True, text=True, timeout=1800)
    out = result.stdout + result.stderr
    found = SUMMARY.search(out)
    stats = emu.admin("GET", "rate-limit")
    completed = sum(1 for i in emu.admin("GET", "state")["instances"] if i["status"] == "completed")
    if not found:
        raise RuntimeError(f"batch DAG run failed ({completed} of {n} completed):\n" + out[-3000:])
    forget_claims(env)  # a failed instance's claim would meet a new instance of the same id after the reset
    log = emu.admin("GET", "requests")
    admitted = stats["admitted"] if limit else len(log)
    refused = stats["refused"]
    row = {"limit": limit, "n": n, "workers": WORKERS, "known": known, "seconds": float(found.group(2)),
           "failed": n - completed, "load": round(os.getloadavg()[0], 1),
           "admitted": admitted, "refused": refused, "share": refused / max(1, admitted + refused),
           "bound": admitted / limit if limit else None}
    shown = format(limit, "g") if limit else "none"
    print(f"  {LABEL}: limit {shown} req/s, {n} instances, known {known}: {row['seconds']:.2f} s, "
          f"{admitted} admitted, {refused} refused ({100 * row['share']:.1f} %), {n - completed} failed"
          + (f", bound {row['bound']:.2f} s, ratio {row['seconds'] / row['bound']:.2f}" if limit else ""), flush=True)
    return row


def forget_claims(env: dict[str, str]) -> None:
    listed = subprocess.run([AIRFLOW_BIN, "variables", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=300)
    line = next((x for x in listed.stdout.splitlines() if x.startswith("[")), "[]")
    for key in (v["key"] for v in json.loads(line) if str(v.get("key", "")).startswith("workflowsoft.")):
        subprocess.run([AIRFLOW_BIN, "variables", "delete", key], env=env, capture_output=True, timeout=300)


def measure(scenarios: tuple[tuple[float, int, float | None], ...]) -> list[dict[str, Any]]:
    emu = Emulator()
    home = Path(tempfile.mkdtemp(prefix="wfs-bench-rate-airflow-"))
    try:
        env = airflow_env(home, REPO / "bench" / "dags", emu.base_url)
        env["PATH"] = f"{Path(AIRFLOW_BIN).parent}{os.pathsep}{env['PATH']}"
        subprocess.run([AIRFLOW_BIN, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
        return [run(emu, env, limit, n, known) for limit, n, known in scenarios]
    finally:
        emu.close()
        shutil.rmtree(home, ignore_errors=True)


def section(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        HEADING,
        "",
        "`python bench/rate_limit.py`: the README's `@task.workflowsoft_worker(integration_step_id=11, "
        f"max_instances=N, max_workers={WORKERS})` (`bench/dags/bench_batch_operator.py`, pollers = workers, the "
        "default) in `airflow dags test` against the emulator in its own process with "
        f"`--latency-ms {LATENCY_MS} --rate-limit R` (a token bucket of R requests per second for the whole tenant, "
        "one second's worth of burst; over it 429 with `Retry-After` in whole seconds). *Admitted* and *429* are "
        "the emulator's own counts (`GET /_emulator/rate-limit`); *bound* = admitted requests / R; *seconds* is "
        "the operator's own report. *before* is the code without the client's limiter (each thread backing off "
        "alone), measured by the same script run with that installation's Python (`BENCH_LABEL=before "
        "<checkout of 0.4>/.venv/bin/python bench/rate_limit.py`; the emulator is this checkout's); *after* is "
        "this code (`python bench/rate_limit.py`). *connection extra*: the connection's `max_requests_per_second` "
        "set to the tenant's limit.",
        "",
        "Targets: at most 2 % of the requests refused with 429, and the run within 1.2x of the bound; without a "
        "limit, no slower than before.",
        "",
        "| code | tenant limit (req/s) | instances | workers | connection extra | admitted | 429 | 429 share | "
        "failed | seconds (operator) | bound (s) | ratio | targets |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label in sorted((k for k in results if k != "overhead"), key=lambda k: (k != "before", k)):
        for r in results[label]:
            extra = f"`max_requests_per_second={r['known']:g}`" if r.get("known") else "-"
            if r["limit"]:
                ratio = r["seconds"] / r["bound"]
                met = r["share"] <= 0.02 and ratio <= 1.2 and not r.get("failed")
                cells = f"{r['bound']:.2f} | {ratio:.2f} | {'met' if met else '**not met**'}"
            else:
                cells = "- | - | -"
            shown = format(r["limit"], "g") if r["limit"] else "none"
            lines.append(f"| {label} | {shown} | {r['n']} | {r['workers']} | {extra} | "
                         f"{r['admitted']} | {r['refused']} | {100 * r['share']:.1f} % | {r.get('failed', 0)} | "
                         f"{r['seconds']:.2f} | "
                         f"{cells} |")
    unlimited = {label: sorted(r["seconds"] for r in rows if not r["limit"]) for label, rows in results.items()
                 if label != "overhead"}
    if all(unlimited.get(label) for label in ("before", "after")):
        lines += ["", "Without a limit (the DAG runs of each label ran one after the other, before first, while other "
                  "work on this shared 2-core machine came and went; the wall time varies by 20 % and more from run "
                  "to run, so the interleaved comparison below is the fair one): "
                  + "; ".join(f"{label} {', '.join(f'{x:.2f}' for x in unlimited[label])} s (median "
                              f"{statistics.median(unlimited[label]):.2f} s)" for label in ("before", "after")) + "."]
    overhead = results.get("overhead", {})
    if all(overhead.get(label) for label in ("before", "after")):
        def median(label: str, key: str) -> float:
            return statistics.median(r[key] for r in overhead[label])

        lines += ["", "The limiter's cost without a limit, measured without Airflow's noise: "
                  "`bench/limiter_overhead.py` (the worker engine alone, 500 instances, 32 workers, claims in "
                  "memory, no limit), the two installations alternating under the same load (`for i in 1 2 3 4; "
                  "do BENCH_LABEL=before <checkout of 0.4>/.venv/bin/python bench/limiter_overhead.py; "
                  "python bench/limiter_overhead.py; done`): "
                  + "; ".join(f"{label}: wall {', '.join(str(r['wall']) for r in overhead[label])} s (median "
                              f"{median(label, 'wall'):.2f}), client CPU median {median(label, 'cpu'):.2f} s"
                              for label in ("before", "after")) + "."]
    lines += [
        "",
        "Where the 429s come from: before, every thread that gets a 429 waits its `Retry-After` alone while the "
        "other threads keep sending, so the tenant's bucket stays empty and a large share of the requests is "
        "refused (at 50 requests per second some instances ran out of retries and failed). With the client's "
        "limiter the first 429 pauses every thread and sets the pace to 85 % of the rate the server admitted; "
        "what is still refused is mostly the requests already in flight when the bucket first ran empty (the client "
        "starts unpaced, so a run without a limit is as fast as before), then a request or two each time the "
        "additive increase probes above the limit. A known limit in the connection avoids even those, at the "
        "price of not using the bucket's burst.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    scenarios = SCENARIOS + (KNOWN_LIMIT_SCENARIOS if LABEL == "after" and not os.environ.get("BENCH_RATE_SCENARIOS")
                             else ())
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if os.environ.get("BENCH_RATE_REPORT_ONLY"):  # rewrite the section from the kept results, measure nothing
        write_section(section(results), HEADING)
        return 0
    rows = measure(scenarios)
    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a["limit"], a["n"], a.get("known")) == (b["limit"], b["n"], b.get("known"))

    kept = [old for old in results.get(LABEL, []) if not any(same(old, new) for new in rows)]
    results[LABEL] = sorted(kept + rows, key=lambda r: (r["limit"] == 0, -r["limit"], bool(r.get("known"))))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return publish(section(results), HEADING)


if __name__ == "__main__":
    sys.exit(main())
