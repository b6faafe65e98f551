"""Distributed deployment: CeleryExecutor with Redis, a fresh PostgreSQL metadata database, two Celery
workers, scheduler, dag-processor, triggerer and API server as separate processes.

In order (one deployment for the module, one emulator handing every instance out once):
1. the deferrable sensor in the real triggerer, a mapped completion on the Celery workers;
2. the batch worker on 1,000 instances at 20 ms per API answer, and the same DAG under ``airflow dags test``;
3. the Celery worker running the batch worker SIGKILLed (its whole process tree) in the middle of its burst;
   the next run takes the dead run's claims over and completes the rest;
4. the triggerer SIGKILLed while the sensor is deferred, instances created while it is down, then restarted;
5. ~20 % of API requests failing (errors and dropped connections) during batch runs;
6. scale-out: ``SCALE_OUT_INSTANCES`` instances (default 2,000) drained by 1, 2 and 4 mapped batch workers spread
   over the two Celery workers, at 20 ms per API answer under a tenant rate limit (``SCALE_OUT_RATE_LIMIT``
   requests/s, default 200; 0: none); in the 4-worker run one Celery worker is SIGKILLed (its whole process tree)
   mid-run and the next run takes the dead workers' claims over after the lease (``bench/scale_out.py``).

Figures go to tests/output/deployment_figures.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

import psutil
import pytest

from tests.deployment.conftest import (
    AIRFLOW_BIN,
    STEP,
    Deployment,
    assert_clean,
    deferred_sensor_round,
    iso_to_epoch,
    record_figures,
    variable_claims,
)

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(1200)]

BATCH = 1000
KILL_BATCH = 400
FAULT_BATCH = 200
LATENCY_MS = 20
SCALE_OUT_INSTANCES = int(os.environ.get("SCALE_OUT_INSTANCES", "2000"))
SCALE_OUT_WORKERS = [int(n) for n in os.environ.get("SCALE_OUT_WORKERS", "1,2,4").split(",")]
SCALE_OUT_RATE_LIMIT = float(os.environ.get("SCALE_OUT_RATE_LIMIT", "200"))
LOG_LINE = re.compile(r"Processed (\d+) integration instance\(s\) in ([\d.]+) s: .*?([\d.]+) ms per record write")


def _completed(dep: Deployment, ids: list[int]) -> int:
    wanted = set(ids)
    return sum(1 for i in dep.emulator.snapshot()["instances"]
               if int(i["IntegrationInstanceId"]) in wanted and i["status"] == "completed")


def _task_log_line(dep: Deployment, dag_id: str, run_id: str) -> str | None:
    logs = dep.base / "home" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    for path in sorted(logs.rglob("*.log")) if logs.exists() else []:
        match = LOG_LINE.search(path.read_text(errors="replace"))
        if match:
            return match.group(0)
    return None


def _batch_run(dep: Deployment, ids: list[int], timeout: float = 600) -> dict[str, Any]:
    t0 = time.monotonic()
    run_id = dep.trigger("deploy_batch")
    state = dep.wait_run("deploy_batch", run_id, timeout=timeout)
    wall = time.monotonic() - t0
    report = dep.xcom("deploy_batch", run_id, "burst") or {}
    return {"run_id": run_id, "state": state, "trigger_to_end_s": round(wall, 2), "report": report,
            "log_line": _task_log_line(dep, "deploy_batch", run_id)}


def test_deferrable_sensor_on_celery(distributed: Deployment) -> None:
    result = deferred_sensor_round(distributed)
    assert result["state"] == "success", distributed.log_tail()
    assert_clean(result["check"])
    tis = distributed.task_instances("deploy_deferred", result["run_id"])
    record_figures("distributed_deferrable_sensor", {
        "startup_s": round(distributed.startup_s, 1),  # type: ignore[attr-defined]
        **{k: v for k, v in result.items() if k not in ("ids", "check")},
        "lost": len(result["check"]["lost"]), "duplicated": len(result["check"]["duplicated"]),
        "open_claims": len(result["check"]["open_claims"]),
        "task_instances": len(tis),
    })


def test_batch_1000_at_20ms_and_dags_test(distributed: Deployment) -> None:
    dep = distributed
    ids = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(STEP, count=BATCH)]
    dep.emulator.set_faults(latency_ms=LATENCY_MS)
    try:
        deployed = _batch_run(dep, ids)
        assert deployed["state"] == "success", (deployed, dep.log_tail())
        check = dep.check_instances(ids)
        assert_clean(check)

        # The same DAG in one process (``airflow dags test``, same database and emulator), for comparison.
        ids2 = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(STEP, count=BATCH)]
        t0 = time.monotonic()
        result = subprocess.run([AIRFLOW_BIN, "dags", "test", "deploy_batch"], env=dep.env, cwd=dep.base,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        dags_test_wall = time.monotonic() - t0
        assert result.returncode == 0, result.stdout[-4000:]
        check2 = dep.check_instances(ids2)
        assert_clean(check2)
        match = LOG_LINE.search(result.stdout)
    finally:
        dep.emulator.clear_faults()

    report = deployed["report"]
    figures: dict[str, Any] = {
        "instances": BATCH,
        "api_latency_ms": LATENCY_MS,
        "celery": {
            "processed": report.get("processed"),
            "operator_seconds": report.get("seconds"),
            "instances_per_s": round(report["processed"] / report["seconds"], 1) if report.get("seconds") else None,
            "store_write_ms": report.get("store_write_ms"),
            "store_round_trips": report.get("store_round_trips"),
            "trigger_to_run_end_s": deployed["trigger_to_end_s"],
            "log_line": deployed["log_line"],
        },
        "dags_test": {
            "process_wall_s": round(dags_test_wall, 2),
            "log_line": match.group(0) if match else None,
        },
        "lost": len(check["lost"]) + len(check2["lost"]),
        "duplicated": len(check["duplicated"]) + len(check2["duplicated"]),
        "open_claims": len(check["open_claims"]) + len(check2["open_claims"]),
    }
    if match:
        n, secs, write_ms = int(match.group(1)), float(match.group(2)), float(match.group(3))
        figures["dags_test"].update({"processed": n, "operator_seconds": secs,
                                     "instances_per_s": round(n / secs, 1) if secs else None,
                                     "store_write_ms": write_ms})
    record_figures("distributed_batch_1000", figures)


def _worker_running(dep: Deployment, pid: int | None) -> str | None:
    """Which Celery worker's process tree holds ``pid``."""
    for name in ("w1", "w2"):
        proc = dep.procs[name]
        try:
            tree = {proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            continue
        if pid in tree:
            return name
    return None


def test_celery_worker_sigkill_mid_burst(distributed: Deployment) -> None:
    dep = distributed
    ids = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(STEP, count=KILL_BATCH)]
    dep.emulator.set_faults(latency_ms=LATENCY_MS)
    try:
        run_id = dep.trigger("deploy_batch")
        ti = dep.wait_task_state("deploy_batch", run_id, "burst", {"running"}, timeout=240)
        deadline = time.monotonic() + 300
        while _completed(dep, ids) < KILL_BATCH // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ti = next(t for t in dep.task_instances("deploy_batch", run_id) if t["task_id"] == "burst")
        worker = _worker_running(dep, ti["pid"])
        assert worker, f"no Celery worker holds the task process {ti}"
        dep.kill(worker)  # SIGKILL the worker and every process under it, as when its host dies
        killed_at = time.monotonic()
        time.sleep(0.5)  # requests the dead process had sent are answered
        snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
        claimed = {int(i) for r in dep.claim_records().values() if isinstance(r, dict) for i in r.get("claims") or {}}
        unclaimed_in_flight = {i for i in ids if snapshot[i]["status"] == "handed_out" and i not in claimed}
        at_kill = {
            "completed": sum(1 for i in ids if snapshot[i]["status"] == "completed"),
            "handed_out_not_completed": sum(1 for i in ids if snapshot[i]["status"] == "handed_out"),
            "never_handed_out": sum(1 for i in ids if snapshot[i]["status"] == "new"),
            "handed_out_not_claimed": len(unclaimed_in_flight),
        }
        dep.restart(worker)
        first_state = dep.wait_run("deploy_batch", run_id, timeout=300)  # the scheduler notices the dead task
        dead_run_detected_s = time.monotonic() - killed_at
        second = _batch_run(dep, ids)
        recovery_s = time.monotonic() - killed_at
        check = dep.check_instances(ids)
    finally:
        dep.emulator.clear_faults()
    assert first_state == "failed"
    assert second["state"] == "success", (second, dep.log_tail())
    # With a server that hands an instance out once, an instance in flight when the worker died is either
    # in the claims ledger (taken over by the next run) or lost; it is never completed twice.
    assert not check["duplicated"], check
    assert not check["wrong_values"], check
    assert not check["open_claims"], check
    assert check["processes_by_api"] == 0 and check["tasks"] == 0, check
    # Lost = only what the server had handed out and the ledger had not yet recorded when the worker died.
    assert set(check["lost"]) <= unclaimed_in_flight, (check["lost"], sorted(unclaimed_in_flight))
    record_figures("distributed_worker_sigkill", {
        "instances": KILL_BATCH,
        "killed_worker": worker,
        "at_kill": at_kill,
        "dead_run_detected_s": round(dead_run_detected_s, 1),
        "kill_to_all_done_s": round(recovery_s, 1),
        "next_run_report": {k: second["report"].get(k) for k in ("processed", "seconds", "skipped", "reclaimed")
                            if k in second["report"]} | {"succeeded": second["report"].get("succeeded_count")},
        "lost": len(check["lost"]),
        "lost_ids": check["lost"],
        "duplicated": len(check["duplicated"]),
        "open_claims": len(check["open_claims"]),
    })


def test_triggerer_killed_while_sensor_deferred(distributed: Deployment) -> None:
    result = deferred_sensor_round(distributed, kill_triggerer=True)
    assert result["state"] == "success", distributed.log_tail()
    assert_clean(result["check"])
    record_figures("distributed_triggerer_kill", {
        **{k: v for k, v in result.items() if k not in ("ids", "check")},
        "lost": len(result["check"]["lost"]), "duplicated": len(result["check"]["duplicated"]),
        "open_claims": len(result["check"]["open_claims"]),
    })


def test_twenty_percent_api_faults_during_batch_runs(distributed: Deployment) -> None:
    dep = distributed
    ids = [int(i["IntegrationInstanceId"]) for i in dep.emulator.create_instances(STEP, count=FAULT_BATCH)]
    dep.emulator.clear_request_log()
    faults = {"error_rate": 0.15, "drop_rate": 0.05, "error_statuses": [500, 502, 503, 504, 429],
              "retry_after": 1, "seed": 20261128, "latency_ms": 5}
    dep.emulator.set_faults(**faults)
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        for _ in range(4):  # a drain stops at a poll that keeps failing: the next run takes the rest
            run = _batch_run(dep, ids)
            runs.append({"state": run["state"], "s": run["trigger_to_end_s"],
                         "processed": run["report"].get("processed")})
            if _completed(dep, ids) == len(ids):
                break
    finally:
        dep.emulator.clear_faults()
    wall = time.monotonic() - t0
    log = dep.emulator.request_log()
    injected: dict[str, int] = {}
    for entry in log:
        if entry["fault"]:
            injected[entry["fault"]] = injected.get(entry["fault"], 0) + 1
    check = dep.check_instances(ids)
    record_figures("distributed_api_faults_20pct", {
        "instances": FAULT_BATCH,
        "faults": faults,
        "api_requests": len(log),
        "faults_injected": injected,
        "fault_share": round(sum(injected.values()) / len(log), 3) if log else None,
        "runs": runs,
        "wall_s": round(wall, 1),
        "lost": len(check["lost"]),
        "duplicated": len(check["duplicated"]),
        "open_claims": len(check["open_claims"]),
    })
    assert_clean(check)
    print(json.dumps(runs))


def _drain_window(dep: Deployment, ids: list[int]) -> float | None:
    """Seconds from the first of ``ids`` handed out to the last completed, on the emulator's clock."""
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    handed = [iso_to_epoch(snapshot[i]["handed_out_at"]) for i in ids if snapshot[i].get("handed_out_at")]
    done = [iso_to_epoch(snapshot[i]["completed_at"]) for i in ids if snapshot[i].get("completed_at")]
    return round(max(done) - min(handed), 2) if handed and done else None


def _mapped_reports(dep: Deployment, run_id: str) -> list[dict[str, Any]]:
    rows = dep.query("SELECT map_index, value FROM xcom WHERE dag_id='deploy_scale_out' AND run_id=:r "
                     "AND task_id='drain' AND key='return_value' ORDER BY map_index", r=run_id)
    out = []
    for _, value in rows:
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).decode()
        out.append(json.loads(value) if isinstance(value, str) else value)
    return out


def _scale_out_run(dep: Deployment, workers: int, ids: list[int], *, kill: bool = False) -> dict[str, Any]:
    """One run of ``deploy_scale_out`` with ``workers`` mapped batch workers; with ``kill``, once a third of ``ids``
    is completed, the Celery worker holding most of the running map indexes is SIGKILLed with its process tree."""
    refused_before = dep.emulator.rate_limit_stats()["refused"]
    t0 = time.monotonic()
    run_id = dep.trigger("deploy_scale_out", {"workers": workers, "share": len(ids)})
    at_kill: dict[str, Any] = {}
    if kill:
        deadline = time.monotonic() + 300
        while _completed(dep, ids) < len(ids) // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = [t for t in dep.task_instances("deploy_scale_out", run_id)
                   if t["task_id"] == "drain" and t["state"] == "running"]
        holders: dict[str, list[int]] = {}
        for ti in running:
            name = _worker_running(dep, ti["pid"])
            if name:
                holders.setdefault(name, []).append(ti["map_index"])
        assert holders, f"no Celery worker holds a running map index: {running}"
        worker = max(holders, key=lambda n: len(holders[n]))
        dep.kill(worker)  # SIGKILL the worker and every process under it, as when its host dies
        killed_at = time.monotonic()
        time.sleep(0.5)  # requests the dead processes had sent are answered
        snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
        claimed = variable_claims(dep)
        at_kill = {
            "killed_worker": worker,
            "killed_map_indexes": sorted(holders[worker]),
            "map_indexes_by_worker": {n: sorted(v) for n, v in holders.items()},
            "completed": sum(1 for i in ids if snapshot[i]["status"] == "completed"),
            "handed_out_not_completed": sum(1 for i in ids if snapshot[i]["status"] == "handed_out"),
            "unclaimed_in_flight": sorted(i for i in ids if snapshot[i]["status"] == "handed_out"
                                          and i not in claimed),
        }
        dep.restart(worker)
    state = dep.wait_run("deploy_scale_out", run_id, timeout=900)
    wall = time.monotonic() - t0
    tis = [t for t in dep.task_instances("deploy_scale_out", run_id) if t["task_id"] == "drain"]
    reports = _mapped_reports(dep, run_id)
    out: dict[str, Any] = {
        "run_id": run_id, "state": state, "trigger_to_end_s": round(wall, 1),
        "map_indexes": len(tis), "hosts": sorted({str(t["hostname"]) for t in tis}),
        "processed": sum(int(r.get("processed") or 0) for r in reports),
        "yielded": sum(int(r.get("yielded_count") or 0) for r in reports),
        "refused_429": dep.emulator.rate_limit_stats()["refused"] - refused_before,
    }
    if kill:
        out["at_kill"] = at_kill
        out["kill_to_run_end_s"] = round(time.monotonic() - killed_at, 1)
    return out


def test_scale_out_mapped_batch_workers(distributed: Deployment) -> None:
    """1, 2 and 4 mapped batch workers on one step over two Celery workers; the 4-worker run loses a Celery worker."""
    dep = distributed
    dep.wait_parsed(["deploy_scale_out"])
    dep.airflow("dags", "unpause", "deploy_scale_out")
    dep.emulator.set_faults(latency_ms=LATENCY_MS)
    if SCALE_OUT_RATE_LIMIT:
        dep.emulator.update_settings(rate_limit=SCALE_OUT_RATE_LIMIT)
    rows: dict[str, Any] = {}
    try:
        for workers in SCALE_OUT_WORKERS:
            kill = workers == max(SCALE_OUT_WORKERS) and workers > 1
            ids = [int(i["IntegrationInstanceId"])
                   for i in dep.emulator.create_instances(STEP, count=SCALE_OUT_INSTANCES)]
            t0 = time.monotonic()
            run = _scale_out_run(dep, workers, ids, kill=kill)
            row: dict[str, Any] = {"workers": workers, "instances": len(ids), "first_run": run,
                                   "drain_s": _drain_window(dep, ids)}
            if kill:
                assert run["state"] == "failed", run  # the killed map indexes fail (heartbeat timeout)
                row["next_run"] = _scale_out_run(dep, 1, ids)
                assert row["next_run"]["state"] == "success", (row, dep.log_tail())
            else:
                assert run["state"] == "success", (run, dep.log_tail())
            row["wall_s"] = round(time.monotonic() - t0, 1)
            check = dep.check_instances(ids)
            completed = len(ids) - len(check["lost"])
            row.update({
                "instances_per_s": round(completed / row["drain_s"], 1) if row["drain_s"] else None,
                "refused_429": run["refused_429"] + (row.get("next_run") or {}).get("refused_429", 0),
                "yielded": run["yielded"] + (row.get("next_run") or {}).get("yielded", 0),
                "lost": len(check["lost"]), "lost_ids": check["lost"],
                "doubled": len(check["duplicated"]), "open_claims": len(check["open_claims"]),
            })
            rows[str(workers)] = row
            print(json.dumps({k: v for k, v in row.items() if k != "lost_ids"}), flush=True)
            # Nothing completed twice, every value right, no claim left open, nothing created on the side.
            assert not check["duplicated"], check
            assert not check["wrong_values"], check
            assert not check["open_claims"], check
            assert check["processes_by_api"] == 0 and check["tasks"] == 0, check
            if kill:
                # Lost = only what the server had handed out and no claims record held when the worker died
                # (against a server that hands an instance out once); the dead workers' claims were taken over.
                assert set(check["lost"]) <= set(run["at_kill"]["unclaimed_in_flight"]), (check["lost"], run)
            else:
                assert not check["lost"], check
    finally:
        dep.emulator.clear_faults()
        dep.emulator.update_settings(rate_limit=0)
        record_figures("distributed_scale_out", {
            "instances_per_run": SCALE_OUT_INSTANCES, "api_latency_ms": LATENCY_MS,
            "rate_limit_per_s": SCALE_OUT_RATE_LIMIT or None, "threads_per_worker": 8,
            "celery_workers": 2, "celery_concurrency": 2, "reclaim_after_s": 5, "runs": rows,
        })
