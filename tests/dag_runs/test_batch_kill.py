"""The batch worker killed with SIGKILL in the middle of a burst, as a worker host dies: nothing completed
twice, and nothing lost but the poll answers in flight at the kill (none when the server hands an instance
out until it is completed).

Each round starts ``airflow dags test reliability_batch`` (the README's ``@task.workflowsoft_worker``, claims
in Airflow Variables), kills its whole process group once a share of the burst is completed, and the next
round (a new DAG run, lease 0) takes the dead run's claims over. The last round runs to the end. Lost =
handed out by the server, never completed. The per-kill figures go to tests/output/batch_kill_figures.json.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from tests.dag_runs.conftest import OUTPUT_DIR
from tests.dag_runs.prefork import signal_run, start_airflow
from tests.dag_runs.test_reliability import Home, check_instances, completions_by_instance, token_conn

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
FIGURES_FILE = OUTPUT_DIR / "batch_kill_figures.json"
STEP = 11
#: 80 in ``make test``; docs/reliability.md quotes ``BATCH_KILL_INSTANCES=300``.
INSTANCES = int(os.environ.get("BATCH_KILL_INSTANCES", "80"))
KILLS = 2


@pytest.fixture
def home(airflow_home: Path) -> Home:
    return Home(airflow_home)


def _completed(emulator: EmulatorServer) -> int:
    return sum(1 for i in emulator.snapshot()["instances"] if i["status"] == "completed")


def _handed_out(emulator: EmulatorServer) -> int:
    return sum(i["handed_out_count"] for i in emulator.snapshot()["instances"])


def _run_and_kill(home: Home, emulator: EmulatorServer, kill_when: Callable[[], bool] | None,
                  instances: int, max_unclaimed: int | None = None) -> tuple[int, str]:
    """One ``airflow dags test`` run; with ``kill_when``, SIGKILL its process group as soon as it says so.
    Returns (exit code, output)."""
    env = home.env(token_conn(emulator), {"RELIABILITY_RECLAIM_AFTER_S": "0",
                                          "RELIABILITY_BATCH_INSTANCES": str(instances),
                                          "RELIABILITY_BATCH_MAX_UNCLAIMED": str(max_unclaimed or "")})
    log = home.path / f"run-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = start_airflow(["dags", "test", "reliability_batch"], env, stdout=out)
        try:
            deadline = time.monotonic() + 300
            while process.poll() is None and time.monotonic() < deadline:
                if kill_when is not None and kill_when():
                    signal_run(process, signal.SIGKILL)
                    break
                time.sleep(0.005)
            code = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                signal_run(process, signal.SIGKILL)
    return code, log.read_text()


@pytest.mark.parametrize(("semantics", "max_unclaimed"), [("once", None), ("once", 1), ("until-completed", None)])
def test_sigkill_mid_burst_loses_only_answers_in_flight(home: Home, semantics: str, max_unclaimed: int | None) -> None:
    # A server that hands the oldest open instance out until it is completed gives one instance per drain
    # (every poller gets the same one), so that reading is killed right after its poll, on a few instances.
    once = semantics == "once"
    count = INSTANCES if once else 2
    with EmulatorServer(poll_semantics=semantics) as emulator:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=count)]
        emulator.set_faults(latency_ms=20)
        kills: list[dict[str, Any]] = []
        output = ""
        for _ in range(40):
            before, handed = _completed(emulator), _handed_out(emulator)
            if before == count:
                break
            kill_when = None
            if len(kills) < KILLS:
                kill_when = ((lambda b=before: _completed(emulator) >= b + count // (KILLS + 2)) if once
                             else (lambda h=handed: _handed_out(emulator) > h))
            code, output = _run_and_kill(home, emulator, kill_when, count, max_unclaimed)
            if code == -signal.SIGKILL:
                instances = emulator.snapshot()["instances"]
                kills.append({"completed_before": before, "completed_at_kill": _completed(emulator),
                              "handed_out_not_completed": sum(1 for i in instances if i["status"] == "handed_out")})
                continue
            assert code == 0 and "state=success" in output, output[-6000:]
            if once and len(kills) == KILLS:
                break  # the run after the last kill drained everything that was left
        assert len(kills) == KILLS
        checked = check_instances(emulator, ids, home)
        completions = completions_by_instance(emulator.request_log())

    # Nothing is ever completed twice, and every completed instance got its own values.
    assert checked["duplicated"] == [] and max(completions.values()) == 1, checked["duplicated"]
    assert checked["wrong_values"] == {}, checked["wrong_values"]
    # No open claim is left behind: the last run took over every dead run's claims and completed them.
    assert checked["open_claims"] == {}, checked["open_claims"]
    lost = checked["lost"]
    write_ms = re.search(r"([\d.]+) ms per record write", output)
    figures = {"semantics": semantics, "max_unclaimed": max_unclaimed or "default (2 x pollers = 16)",
               "store_write_ms": float(write_ms.group(1)) if write_ms else None, "instances": count,
               "kills": kills, "lost": len(lost),
               "lost_per_kill": round(len(lost) / KILLS, 2), "claim_records_left": checked["claim_records_left"]}
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    label = f"{semantics}, max_unclaimed={max_unclaimed or 'default'}"
    FIGURES_FILE.write_text(json.dumps({**existing, label: figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    if semantics == "until-completed":
        assert lost == [], figures  # the server offers them again: nothing can be lost
    else:
        # Only answers not yet durably claimed at the kill can be lost (the server handed them out, the dead
        # process never wrote their claims): at most max_unclaimed per kill (default 2 x 8 pollers);
        # docs/reliability.md gives the measured average.
        assert len(lost) <= (max_unclaimed or 16) * KILLS, figures
    assert checked["claim_records_left"] == 0, figures
