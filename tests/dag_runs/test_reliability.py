"""Never lose or duplicate work: real Airflow (``airflow dags test``) against the emulator under faults,
crashes, lost answers and expiring tokens; and no token in anything Airflow writes.

Each test gets a fresh AIRFLOW_HOME (a copy of the session's migrated database), so the ledgers'
Variables of one test never meet another test's emulator ids.
"""

from __future__ import annotations

import collections
import configparser
import json
import os
import re
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.emulator.scenario import DEMO_SCENARIO_PATH
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS
from tests.dag_runs.conftest import OUTPUT_DIR, TEST_DAGS_FOLDER, airflow_env
from tests.dag_runs.prefork import run_airflow

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
FIGURES_FILE = OUTPUT_DIR / "reliability_figures.json"
CATEGORIES = ("Conference", "Workshop", "Webinar")
STEP = 11
UPDATE_PATH = "/api/v2/workflows/instances/variables"
ACTION_PREFIX = "/api/v2/tasks/"
CLAIMS_PREFIX = "workflowsoft.claims."
CREATE_PREFIX = "workflowsoft.create."


def values_for(instance_id: int) -> dict[str, Any]:
    """What the DAG writes to an instance (same rule as the DAG file)."""
    return {
        "Venue code": f"V-{instance_id}",
        "Attendees": instance_id % 1000,
        "Event exists": instance_id % 2 == 0,
        "Category": CATEGORIES[instance_id % 3],
    }


class Home:
    """A private AIRFLOW_HOME and a runner of ``airflow dags test`` in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def env(self, conn: dict[str, Any], extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = airflow_env(self.path, TEST_DAGS_FOLDER)
        env["AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT"] = json.dumps(conn)
        env.update(extra_env or {})
        return env

    def run(
        self,
        dag_id: str,
        conn: dict[str, Any],
        *,
        conf: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        logical_date: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        env = self.env(conn, extra_env)
        args = ["dags", "test", dag_id, *([logical_date] if logical_date else [])]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return run_airflow(args, env, timeout=timeout)

    def run_task(
        self, dag_id: str, task_id: str, run_id: str, conn: dict[str, Any]
    ) -> subprocess.CompletedProcess[str]:
        """``airflow tasks test`` of one task instance of an existing run."""
        env = self.env(conn)
        return run_airflow(["tasks", "test", dag_id, task_id, run_id], env)

    def variables(self) -> dict[str, Any]:
        """Every Airflow Variable of this home, JSON-decoded, read straight from its SQLite database (values
        decrypted with the home's Fernet key, as Airflow stores them): ``airflow variables export`` would add a
        whole Airflow start-up to every check."""
        config = configparser.ConfigParser(interpolation=None)
        config.read(self.path / "airflow.cfg")
        fernet = Fernet(config.get("core", "fernet_key").encode())
        with sqlite3.connect(self.path / "airflow.db") as db:
            rows = db.execute("SELECT key, val, is_encrypted FROM variable").fetchall()
        data = {key: fernet.decrypt(val.encode()).decode() if encrypted else val for key, val, encrypted in rows}
        return {k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for k, v in data.items()}

    def claim_records(self) -> dict[str, dict[str, Any]]:
        """The claims records (one Airflow Variable per task instance holding claims or done marks)."""
        return {k: v for k, v in self.variables().items() if k.startswith(CLAIMS_PREFIX)}

    def claims(self) -> dict[int, dict[str, Any]]:
        """Every claimed instance across the records: ``{id: {"state": "claimed"|"done", ...}}``."""
        records = self.claim_records()
        done = {iid for record in records.values() for iid in record.get("done") or {}}
        out: dict[int, dict[str, Any]] = {}
        for record in records.values():
            for iid, claim in (record.get("claims") or {}).items():
                out[int(iid)] = {**claim, "integration_instance_id": int(iid),
                                 "state": "done" if iid in done else "claimed", "owner": record.get("owner")}
        return out

    def create_records(self) -> dict[str, Any]:
        """The create records, ``{task_id: value}``: Airflow 3.3+ keeps them in the task-state store, older
        Airflow in one Variable per task instance (``workflowsoft.create.<dag>.<run>.<task>.<map index>``)."""
        if not AIRFLOW_V_3_3_PLUS:
            return {key.split(".")[-2]: value for key, value in self.variables().items()
                    if key.startswith(CREATE_PREFIX)}
        with sqlite3.connect(self.path / "airflow.db") as db:
            rows = db.execute("SELECT task_id, key, value FROM task_state_store").fetchall()
        return {task_id: json.loads(value) for task_id, key, value in rows if key == "workflowsoft.create"}


@pytest.fixture
def home(airflow_home: Path) -> Home:
    return Home(airflow_home)  # a fresh copy of the migrated home for each test (see conftest)


def token_conn(emulator: EmulatorServer, token: str = "demo-token", **extra: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {"conn_type": "workflowsoft", "host": emulator.base_url, "password": token}
    if extra:
        conn["extra"] = extra
    return conn


def admin_conn(emulator: EmulatorServer, lifetime: int = 3600, **extra: Any) -> dict[str, Any]:
    # "lifetime_seconds" is the extra's name; "token_lifetime_seconds" its older name (read as a fallback).
    return {
        "conn_type": "workflowsoft",
        "host": emulator.base_url,
        "login": "admin@example.com",
        "password": "admin-password",
        "extra": {"lifetime_seconds": lifetime, "token_lifetime_seconds": lifetime, **extra},
    }


def succeeded(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "state=success" in result.stdout


def effective(entry: dict[str, Any]) -> bool:
    """Did the server act on this logged request (answered 2xx, or acted and then dropped the answer)?"""
    if entry["fault"] == "commit_then_drop":
        # The emulator drops the answer only when the action succeeded; a refused one (409) is answered.
        return entry["status"] is None
    return entry["status"] is not None and 200 <= entry["status"] < 300


def completions_by_instance(log: list[dict[str, Any]]) -> collections.Counter[int]:
    counts: collections.Counter[int] = collections.Counter()
    for entry in log:
        if entry["method"] == "PATCH" and entry["path"].startswith(ACTION_PREFIX) and effective(entry):
            counts[int(entry["path"].split("/")[4])] += 1
    return counts


def check_instances(emulator: EmulatorServer, ids: list[int], home: Home) -> dict[str, Any]:
    """Every instance completed exactly once with its values; no extra process or task; no open claim.
    Returns the counts (lost, duplicated...)."""
    snapshot = emulator.snapshot()
    instances = {int(i["IntegrationInstanceId"]): i for i in _instances(snapshot)}
    completions = completions_by_instance(emulator.request_log())
    lost = [i for i in ids if instances[i]["status"] != "completed"]
    duplicated = [i for i in ids if completions[i] > 1]
    wrong = {
        i: {k: instances[i]["fields"].get(k) for k in values_for(i)}
        for i in ids
        if instances[i]["status"] == "completed"
        and any(instances[i]["fields"].get(k) != v for k, v in values_for(i).items())
    }
    open_claims = {k: v for k, v in home.claims().items() if v.get("state") != "done"}
    return {
        "lost": lost,
        "duplicated": duplicated,
        "wrong_values": wrong,
        "never_completed_by_patch": [i for i in ids if completions[i] == 0],
        "processes": len(_processes(snapshot)),
        "processes_by_api": sum(1 for p in _processes(snapshot) if p.get("source") == "api"),
        "tasks": len(snapshot.get("tasks") or []),
        "open_claims": open_claims,
        "claim_records_left": len(home.claim_records()),
    }


def _instances(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    items = snapshot["instances"]
    return list(items.values()) if isinstance(items, dict) else list(items)


def _processes(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    items = snapshot.get("processes") or []
    return list(items.values()) if isinstance(items, dict) else list(items)


def fault_counts(log: list[dict[str, Any]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for entry in log:
        if entry["fault"] == "commit_then_drop" and entry["status"] is not None:
            counts["commit_then_drop_refused_and_answered"] += 1  # the action failed (409): nothing dropped
        elif entry["fault"]:
            counts[entry["fault"]] += 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------------
# 2. A create whose answer is lost after the server acted
# ---------------------------------------------------------------------------------------------------

START_PATH = "/api/v2/workflows/start"
TASKS_PATH = "/api/v2/tasks"


def test_lost_create_answer_fails_clearly_and_never_duplicates(home: Home) -> None:
    with EmulatorServer() as emulator:
        # Every create is acted on, then its connection is closed without an answer.
        emulator.set_faults(commit_then_drop_rate=1.0, methods=["POST"], paths=[START_PATH, TASKS_PATH], seed=7)
        first = home.run("reliability_creates", token_conn(emulator))
        run_id = re.search(r"run_id=(manual__[^,\s]+)", first.stdout)
        assert run_id, first.stdout[-4000:]
        # The same task instances again (what a retry or a clear does: same dag, run, task, map index).
        again = [
            home.run_task("reliability_creates", task_id, run_id.group(1), token_conn(emulator))
            for task_id in ("start_process", "create_task")
        ]
        snapshot = emulator.snapshot()
        log = emulator.request_log()

    assert first.returncode != 0 and "state=success" not in first.stdout, first.stdout[-4000:]
    # DuplicateRiskError fails the task at once: a retry could not tell more than the first try.
    assert "up_for_retry" not in first.stdout
    # One error per create (Airflow 2.11 logs each task's traceback more than once, 3.3 once).
    unknown = re.findall(r"DuplicateRiskError: The outcome of POST (\S+) is unknown", first.stdout)
    assert sorted(set(unknown)) == [TASKS_PATH, START_PATH], first.stdout[-4000:]
    assert "may have acted on it" in first.stdout
    # It says what to check and how to clear.
    assert "Check in Workflowsoft whether a process of 'Customer follow-up' (diagram 2) exists" in first.stdout
    assert "Check in Workflowsoft whether the task 'Call the new customer' exists" in first.stdout
    assert "allow_duplicates=True" in first.stdout
    for task_id, result in zip(("start_process", "create_task"), again, strict=True):
        # Airflow 3.3's tasks test logs the failed state and exits 0 anyway; 2.11's exits with the error.
        assert "new_state=failed" in result.stdout or result.returncode != 0, result.stdout[-4000:]
        assert "DuplicateRiskError: An earlier try of this task sent" in result.stdout, result.stdout[-4000:]
        # The message names the record and says how to remove it.
        if AIRFLOW_V_3_3_PLUS:  # the task instance's task-state key, deleted through the REST API
            assert "the task-state key 'workflowsoft.create' of this task instance" in result.stdout, \
                result.stdout[-4000:]
            assert "/api/v2/dags/reliability_creates/dagRuns/" in result.stdout
        else:  # one Variable per task instance, deleted with the CLI
            key = naming.create_key(naming.owner_name("reliability_creates", run_id.group(1), task_id, -1))
            assert key.startswith(f"{CREATE_PREFIX}reliability_creates.manual__") and key.endswith(f".{task_id}.-1")
            assert f"the Airflow Variable '{key}'" in result.stdout, result.stdout[-4000:]
            assert f"airflow variables delete {key}" in result.stdout

    # Exactly one process and one task in Workflowsoft, each sent exactly once.
    assert [p["process_diagram_id"] for p in _processes(snapshot) if p["source"] == "api"] == [2]
    assert len(snapshot["tasks"]) == 1
    assert sum(1 for e in log if e["method"] == "POST" and e["path"] == START_PATH) == 1
    assert sum(1 for e in log if e["method"] == "POST" and e["path"] == TASKS_PATH) == 1
    # The records the messages name are there, in the state "sending" (outcome unknown).
    creates = home.create_records()
    assert sorted(creates) == ["create_task", "start_process"]
    assert all(v["state"] == "sending" for v in creates.values()), creates
    if AIRFLOW_V_3_3_PLUS:  # ...kept in Airflow's task-state store, not among the Variables
        assert not [k for k in home.variables() if k.startswith(CREATE_PREFIX)]


# ---------------------------------------------------------------------------------------------------
# 3. A run killed right after its sensor received instances
# ---------------------------------------------------------------------------------------------------


def test_killed_run_is_completed_by_the_next_run(home: Home) -> None:
    with EmulatorServer(poll_semantics="once") as emulator:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=5)]
        env = {"RELIABILITY_RECLAIM_AFTER_S": "0", "RELIABILITY_TASK_RETRIES": "0"}
        crashed = home.run(
            "reliability_process", token_conn(emulator), conf={"max_instances": 5, "crash": True}, extra_env=env
        )
        # `airflow dags test` runs tasks in its own process: the gate's os._exit killed the whole run.
        assert crashed.returncode == 137, crashed.stdout[-4000:]
        assert "crashing the run on purpose after the sensor took 5 instance(s)" in crashed.stdout
        after_crash = {int(i["IntegrationInstanceId"]): i for i in _instances(emulator.snapshot())}
        assert all(after_crash[i]["status"] == "handed_out" for i in ids), after_crash
        claims = home.claims()
        assert sorted(v["integration_instance_id"] for v in claims.values() if v["state"] == "claimed") == ids

        polls_before = sum(1 for e in emulator.request_log() if "new-integrations" in e["path"])
        nxt = home.run("reliability_process", token_conn(emulator), conf={"max_instances": 5}, extra_env=env)
        assert succeeded(nxt), nxt.stdout[-6000:]
        assert nxt.stdout.count("Re-offering integration instance") == 5, nxt.stdout[-6000:]
        checked = check_instances(emulator, ids, home)
        snapshot = emulator.snapshot()
        polls_after = sum(1 for e in emulator.request_log() if "new-integrations" in e["path"])

    assert checked["lost"] == [] and checked["duplicated"] == [] and checked["wrong_values"] == {}, checked
    assert checked["open_claims"] == {}
    # The server handed each instance out once: only the ledger could bring them back.
    assert all(i["handed_out_count"] == 1 for i in _instances(snapshot))
    assert polls_after == polls_before  # the next run took the reclaimed ones, without needing a poll


# ---------------------------------------------------------------------------------------------------
# 4. Tokens expiring in the middle of a run
# ---------------------------------------------------------------------------------------------------


def test_token_expiry_mid_run_is_no_failure(home: Home) -> None:
    with EmulatorServer() as emulator:
        ids = [int(i["IntegrationInstanceId"]) for i in emulator.create_instances(STEP, count=12)]
        stop = threading.Event()
        expiries = 0

        def expire_now_and_then() -> None:
            nonlocal expiries
            while not stop.wait(0.5):
                emulator.expire_tokens()
                expiries += 1

        timer = threading.Thread(target=expire_now_and_then, daemon=True)
        timer.start()
        try:
            # A 5 s lifetime, renewed by the client before it runs out, and every token revoked every 0.5 s.
            result = home.run("reliability_process", admin_conn(emulator, lifetime=5), conf={"max_instances": 12})
        finally:
            stop.set()
            timer.join()
        log = emulator.request_log()
        checked = check_instances(emulator, ids, home)

    assert succeeded(result), result.stdout[-6000:]
    assert "up_for_retry" not in result.stdout  # no task needed an Airflow retry
    assert checked["lost"] == [] and checked["duplicated"] == [] and checked["wrong_values"] == {}, checked
    assert expiries >= 3
    rejected = [e for e in log if e["status"] == 401]
    mints = [e for e in log if e["path"] == "/api/v2/app/apitoken" and e["status"] == 200]
    assert rejected, "no request met an expired token: the test proved nothing"
    assert len(mints) >= 2


# ---------------------------------------------------------------------------------------------------
# 5. No token in anything Airflow writes
# ---------------------------------------------------------------------------------------------------


def _written_by_airflow(home: Home, result: subprocess.CompletedProcess[str]) -> dict[str, bytes]:
    """The run's output and every file of the AIRFLOW_HOME (task logs, metadata database and its journal)."""
    found = {"<dags test output>": result.stdout.encode()}
    for path in sorted(home.path.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(home.path))] = path.read_bytes()
    return found


def _where(needle: str, blobs: dict[str, bytes]) -> list[str]:
    return [name for name, data in blobs.items() if needle.encode() in data]


def test_no_token_in_logs_or_metadata(home: Home, tmp_path: Path) -> None:
    secret = "wfs-SECRET-" + os.urandom(12).hex()
    control = "wfs-CONTROL-" + os.urandom(12).hex()
    scenario = json.loads(Path(DEMO_SCENARIO_PATH).read_text())
    scenario["api_tokens"] = [secret]
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(scenario))
    state_file = tmp_path / "state.json"

    with EmulatorServer(scenario=str(scenario_file), state_file=str(state_file)) as emulator:
        emulator.create_instances(STEP, count=2)
        given = home.run(
            "reliability_process", token_conn(emulator, secret), conf={"max_instances": 2, "control": control}
        )
        assert succeeded(given), given.stdout[-6000:]
        emulator.create_instances(STEP, count=2)
        minted_run = home.run("reliability_process", admin_conn(emulator), conf={"max_instances": 2})
        assert succeeded(minted_run), minted_run.stdout[-6000:]
    minted = list(json.loads(state_file.read_text())["minted_tokens"])
    assert minted, "the admin-credential run minted no token"

    blobs = _written_by_airflow(home, given)
    blobs["<second dags test output>"] = minted_run.stdout.encode()
    # `airflow dags test` runs tasks in its own process and writes their logs to its output; any file it
    # writes under AIRFLOW_HOME/logs (none with Airflow 3.3) is searched too.
    assert "airflow.db" in blobs
    # The search finds what is there: the control string was logged and returned on purpose.
    where_control = _where(control, blobs)
    assert "<dags test output>" in where_control, where_control
    assert "airflow.db" in where_control or any(n.startswith("airflow.db") for n in where_control), where_control
    # ... and finds no token.
    assert all(t.startswith("tok_") for t in minted)
    for token in [secret, *minted]:
        assert _where(token, blobs) == [], f"a token was written to {_where(token, blobs)}"
