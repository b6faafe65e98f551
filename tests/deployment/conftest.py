"""A real Airflow deployment started from the project's own files, for the deployment tests.

Every component is its own process (``airflow scheduler``, ``dag-processor``, ``triggerer``, ``api-server``
and, distributed, two ``airflow celery worker``), each in its own process group, on free loopback ports,
sharing one AIRFLOW_HOME, one JWT secret, one Fernet key and the metadata database. Whatever happens, the
fixtures' teardown kills every process tree they started (SIGTERM, then SIGKILL) and drops the database
they created.

- ``embedded``: LocalExecutor on a fresh PostgreSQL database per deployment when PostgreSQL is reachable
  (``WFS_PG_URL``, below) and ``psycopg2`` and ``asyncpg`` are installed (the ``test`` extra), 4 task slots;
  otherwise on SQLite, 2 task slots, with a note saying why (``WFS_EMBEDDED_DB=sqlite`` asks for SQLite).
  Airflow's SQLite-backed components were seen to exit with ``database is locked`` when 20 DAG runs start at
  once on a loaded 2-core machine: the round trips of 10 waiters (test_embedded_round_trips.py) skip on SQLite. Its
  Workflowsoft connection is made the README's way, with ``airflow connections add`` (stored in the metadata
  database); the distributed one keeps the ``AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT`` variable, so both ways run in
  the real triggerer.
- ``distributed``: CeleryExecutor, a fresh PostgreSQL database per run (``WFS_PG_URL``, default
  ``postgresql://root@127.0.0.1:5432/postgres``: the server and a database to connect to for CREATE DATABASE)
  and Redis as the broker (``WFS_REDIS_URL``, default ``redis://127.0.0.1:6379/0``); skipped with the reason
  when either is not reachable or ``apache-airflow-providers-celery`` / ``psycopg2`` is missing.

The embedded tests run in ``make test``; the distributed ones only when ``WFS_DEPLOYMENT=1``
(``make test-deployment`` sets it).
State is read straight from the metadata database (SQLAlchemy, no pool), Variables decrypted with the
deployment's Fernet key; DAG runs are triggered and DAGs unpaused with the ``airflow`` CLI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer

REPO = Path(__file__).resolve().parents[2]
REPO_DAGS = REPO / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
FIGURES_FILE = REPO / "tests" / "output" / "deployment_figures.json"
CLAIMS_PREFIX = "workflowsoft.claims."
ENABLED = os.environ.get("WFS_DEPLOYMENT") == "1"
PG_URL = os.environ.get("WFS_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The embedded deployment needs nothing but the venv: it runs in `make test`. The distributed one needs
    # PostgreSQL and Redis: `make test-deployment` sets WFS_DEPLOYMENT=1 for it.
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="distributed deployment test: set WFS_DEPLOYMENT=1 (make test-deployment)")
    for item in items:
        if "deployment" in item.keywords and item.path.name == "test_distributed.py":
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process, its process group and every descendant (some re-group themselves)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Merge one scenario's figures into tests/output/deployment_figures.json."""
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if FIGURES_FILE.exists():
        try:
            data = json.loads(FIGURES_FILE.read_text())
        except ValueError:
            data = {}
    data[section] = figures
    FIGURES_FILE.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def values_for(instance_id: int) -> dict[str, Any]:
    """What the deployment DAGs write to an instance (same rule as tests/deployment/dags)."""
    categories = ("Conference", "Workshop", "Webinar")
    return {
        "Venue code": f"D-{instance_id}",
        "Attendees": instance_id % 1000,
        "Event exists": instance_id % 2 == 0,
        "Category": categories[instance_id % 3],
    }


def _effective(entry: dict[str, Any]) -> bool:
    if entry["fault"] == "commit_then_drop":
        return entry["status"] is None
    return entry["status"] is not None and 200 <= entry["status"] < 300


def completions(emulator: EmulatorServer) -> dict[int, int]:
    """Completions the server acted on, per instance, from the emulator's request log."""
    counts: dict[int, int] = {}
    for entry in emulator.request_log():
        if entry["method"] == "PATCH" and entry["path"].startswith("/api/v2/tasks/") and _effective(entry):
            iid = int(entry["path"].split("/")[4])
            counts[iid] = counts.get(iid, 0) + 1
    return counts


def postgres_missing(pg_url: str = PG_URL) -> str | None:
    """Why no PostgreSQL database can be made for a deployment (``None``: it can): the drivers Airflow needs
    (``psycopg2`` for its sessions, ``asyncpg`` for its async session) or the server at ``pg_url``."""
    try:
        import asyncpg  # noqa: F401
        import psycopg2
    except ImportError as exc:
        return f"psycopg2-binary and asyncpg are needed for PostgreSQL (the test extra): {exc}"
    pg = urllib.parse.urlsplit(pg_url)
    if not reachable(pg.hostname or "127.0.0.1", pg.port or 5432):
        return f"PostgreSQL not reachable at {pg.hostname}:{pg.port or 5432} (WFS_PG_URL)"
    try:
        psycopg2.connect(pg_url, connect_timeout=5).close()
    except Exception as exc:
        return f"cannot connect to PostgreSQL with WFS_PG_URL={_redacted(pg_url)}: {type(exc).__name__}"
    return None


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def fresh_postgres_database(prefix: str, pg_url: str = PG_URL) -> Iterator[tuple[str, str]]:
    """A database of its own on the server of ``pg_url`` (``CREATE DATABASE <prefix>_<hex>``), dropped
    ``WITH (FORCE)`` on the way out whatever happened (a killed component's connections with it).
    Yields its name and its SQLAlchemy URL (``postgresql+psycopg2``). Call :func:`postgres_missing` first."""
    import psycopg2

    pg = urllib.parse.urlsplit(pg_url)
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    db_name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{db_name}"')
        try:
            yield db_name, urllib.parse.urlunsplit(("postgresql+psycopg2", pg.netloc, f"/{db_name}", pg.query, ""))
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------------
# The deployment
# ---------------------------------------------------------------------------------------------------


class StatsdSink:
    """A StatsD server on loopback UDP that the deployment's components send Airflow's metrics to: a thread
    reads every packet as it comes (the components send many; an unread socket would drop some)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="statsd-sink", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65535).decode(errors="replace")
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.lines.extend(packet.splitlines())

    def env(self) -> dict[str, str]:
        return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}

    def clear(self) -> None:
        with self._lock:
            self.lines.clear()

    def counters(self, prefix: str = "airflow.workflowsoft.") -> dict[str, float]:
        """The sum of every counter received under ``prefix`` (``name:value|c``)."""
        totals: dict[str, float] = {}
        with self._lock:
            lines = list(self.lines)
        for line in lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if name.startswith(prefix) and kind.split("|")[0] == "c":
                totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    def names(self, prefix: str = "airflow.workflowsoft.") -> set[str]:
        with self._lock:
            return {line.partition(":")[0] for line in self.lines if line.startswith(prefix)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class Deployment:
    """The processes of one Airflow deployment and the means to look into it."""

    def __init__(self, name: str, base: Path, env: dict[str, str], fernet_key: str, db_url: str,
                 emulator: EmulatorServer) -> None:
        self.name = name
        self.base = base
        self.env = env
        self.fernet_key = fernet_key
        self.db_url = db_url
        self.emulator = emulator
        self.api_port = int(env["AIRFLOW__API__PORT"])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.engine = create_engine(db_url, poolclass=NullPool)

    # -- processes --------------------------------------------------------------------------------

    def start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, **(extra_env or {})}
        self.commands[name] = (args, env)
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([AIRFLOW_BIN, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.base, start_new_session=True)
        log.close()

    def restart(self, name: str) -> None:
        args, env = self.commands[name]
        self.start(name, args, {k: v for k, v in env.items() if self.env.get(k) != v})

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        kill_tree(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                kill_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            kill_tree(proc.pid, signal.SIGKILL)  # the whole tree, also what outlived its parent
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.engine.dispose()

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            out.append(f"----- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"components exited: {dead}\n{self.log_tail()}"

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([AIRFLOW_BIN, *args], env=self.env, cwd=self.base, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    # -- waiting ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())

    def wait_healthy(self, components: tuple[str, ...] = ("scheduler", "triggerer", "dag_processor"),
                     timeout: float = 180) -> float:
        """Until the API server answers and reports every component healthy; returns the seconds waited."""
        start = time.monotonic()
        last: Any = None
        while time.monotonic() - start < timeout:
            self.check_alive()
            try:
                last = self.health()
                if all((last.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", *components)):
                    return time.monotonic() - start
            except Exception as exc:
                last = exc
            time.sleep(1)
        raise AssertionError(f"{self.name} not healthy after {timeout} s: {last}\n{self.log_tail()}")

    def query(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).fetchall())

    def wait_parsed(self, dag_ids: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = {r[0] for r in self.query("SELECT dag_id FROM serialized_dag")}
                if set(dag_ids) <= found:
                    return
            except Exception:
                pass
            self.check_alive()
            time.sleep(1)
        raise AssertionError(f"DAGs {dag_ids} not parsed after {timeout} s\n{self.log_tail()}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run_id = f"deploy__{int(time.time() * 1000)}_{secrets.token_hex(2)}"
        self.airflow("dags", "trigger", dag_id, "-r", run_id, "-c", json.dumps(conf or {}))
        return run_id

    def trigger_many(self, dag_id: str, confs: list[dict[str, Any]]) -> list[str]:
        """Trigger one run per conf through the REST API (one ``airflow`` command each would take seconds)."""
        base = f"http://127.0.0.1:{self.api_port}"
        with urllib.request.urlopen(f"{base}/auth/token", timeout=30) as answer:  # all admins: no credentials
            token = json.loads(answer.read())["access_token"]
        run_ids = []
        for conf in confs:
            run_id = f"deploy__{int(time.time() * 1000)}_{secrets.token_hex(3)}"
            request = urllib.request.Request(
                f"{base}/api/v2/dags/{dag_id}/dagRuns", method="POST",
                data=json.dumps({"dag_run_id": run_id, "logical_date": None, "conf": conf}).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=120):
                run_ids.append(run_id)
        return run_ids

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id=:d AND run_id=:r", d=dag_id, r=run_id)
        return rows[0][0] if rows else None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        rows = self.query("SELECT task_id, map_index, state, hostname, pid, try_number FROM task_instance "
                          "WHERE dag_id=:d AND run_id=:r", d=dag_id, r=run_id)
        return [dict(zip(("task_id", "map_index", "state", "hostname", "pid", "try_number"), r, strict=True))
                for r in rows]

    def wait_task_state(self, dag_id: str, run_id: str, task_id: str, states: set[str],
                        timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ti in self.task_instances(dag_id, run_id):
                if ti["task_id"] == task_id and ti["state"] in states:
                    return ti
            self.check_alive()
            time.sleep(0.3)
        raise AssertionError(f"{dag_id}.{task_id} of {run_id} never reached {states}: "
                             f"{self.task_instances(dag_id, run_id)}\n{self.log_tail()}")

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            self.check_alive()
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} of {dag_id} still {state} after {timeout} s: "
                             f"{self.task_instances(dag_id, run_id)}\n{self.log_tail()}")

    def list_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """``airflow dags list-runs -o json`` (its JSON is the line starting with ``[``)."""
        out = self.airflow("dags", "list-runs", dag_id, "-o", "json").stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("[")), "[]")
        return list(json.loads(line))

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        rows = self.query("SELECT value FROM xcom WHERE dag_id=:d AND run_id=:r AND task_id=:t AND key='return_value'",
                          d=dag_id, r=run_id, t=task_id)
        if not rows:
            return None
        value = rows[0][0]
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).decode()
        return json.loads(value) if isinstance(value, str) else value

    # -- the claims ledger ------------------------------------------------------------------------

    def variables(self) -> dict[str, Any]:
        from cryptography.fernet import Fernet

        fernet = Fernet(self.fernet_key.encode())
        out: dict[str, Any] = {}
        for key, val, encrypted in self.query('SELECT "key", val, is_encrypted FROM variable'):
            text = fernet.decrypt(val.encode()).decode() if encrypted else val
            try:
                out[key] = json.loads(text)
            except ValueError:
                out[key] = text
        return out

    def claim_records(self) -> dict[str, Any]:
        return {k: v for k, v in self.variables().items() if k.startswith(CLAIMS_PREFIX)}

    def open_claims(self) -> dict[int, Any]:
        """Claimed instances with no done mark in any record."""
        records = [r for r in self.claim_records().values() if isinstance(r, dict)]
        done = {str(i) for r in records for i in (r.get("done") or {})}
        return {int(i): {**c, "owner": r.get("owner")} for r in records for i, c in (r.get("claims") or {}).items()
                if str(i) not in done}

    # -- the emulator's view -----------------------------------------------------------------------

    def check_instances(self, ids: list[int]) -> dict[str, Any]:
        """Every instance completed exactly once with its values; no process or task created; no open claim."""
        snapshot = self.emulator.snapshot()
        instances = {int(i["IntegrationInstanceId"]): i for i in snapshot["instances"]}
        done = completions(self.emulator)
        lost = [i for i in ids if instances[i]["status"] != "completed"]
        wrong = [i for i in ids if instances[i]["status"] == "completed"
                 and any(instances[i]["fields"].get(k) != v for k, v in values_for(i).items())]
        open_claims = self.open_claims()
        return {
            "instances": len(ids),
            "completed": len(ids) - len(lost),
            "lost": lost,
            "handed_out_not_completed": [i for i in lost if instances[i]["status"] == "handed_out"],
            "duplicated": [i for i in ids if done.get(i, 0) > 1],
            "wrong_values": wrong,
            "processes_by_api": sum(1 for p in snapshot.get("processes") or [] if p.get("source") == "api"),
            "tasks": len(snapshot.get("tasks") or []),
            "open_claims": sorted(i for i in open_claims if i in set(ids)),
        }


# ---------------------------------------------------------------------------------------------------
# Scenarios shared by the embedded and distributed tests
# ---------------------------------------------------------------------------------------------------

STEP = 11
BURST_STEP = 31  # watched by deploy_burst only


def iso_to_epoch(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def deferred_sensor_round(dep: Deployment, count: int = 5, *, kill_triggerer: bool = False,
                          kill_after_poll: bool = False) -> dict[str, Any]:
    """Trigger ``deploy_deferred``; once its sensor is deferred, create ``count`` instances; wait for the run.
    ``kill_triggerer``: the triggerer is SIGKILLed while the sensor is deferred, before the instances exist;
    ``kill_after_poll``: it is SIGKILLed right after the trigger's polls returned the instances (as soon as its
    claims record holds them all, before the event reaches the task).
    Returns the checks and the latency from instance creation to completion."""
    t_trigger = time.monotonic()
    run_id = dep.trigger("deploy_deferred", {"max_instances": count})
    dep.wait_task_state("deploy_deferred", run_id, "wait", {"deferred"}, timeout=240)
    deferred_after = time.monotonic() - t_trigger
    time.sleep(1)  # the trigger is running (polling empty) in the triggerer
    killed: dict[str, Any] = {}
    if kill_triggerer:  # the triggerer dies while the sensor is deferred; instances arrive while it is down
        dep.kill("triggerer")
        killed["killed_at"] = time.monotonic()
    created = dep.emulator.create_instances(STEP, count=count)
    ids = [int(i["IntegrationInstanceId"]) for i in created]
    if kill_after_poll:
        wait_claimed(dep, ids, variable_claims)
        dep.kill("triggerer")
        killed["killed_at"] = time.monotonic()
    if kill_triggerer or kill_after_poll:
        time.sleep(3)
        dep.restart("triggerer")
        killed["restarted_at"] = time.monotonic()
    state = dep.wait_run("deploy_deferred", run_id, timeout=300)
    if kill_triggerer or kill_after_poll:
        killed = {"triggerer_down_s": round(killed["restarted_at"] - killed["killed_at"], 2),
                  "restart_to_run_end_s": round(time.monotonic() - killed["restarted_at"], 2)}
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    latencies = [iso_to_epoch(snapshot[i]["completed_at"]) - iso_to_epoch(snapshot[i]["created_at"])
                 for i in ids if snapshot[i].get("completed_at")]
    handed = [iso_to_epoch(snapshot[i]["handed_out_at"]) - iso_to_epoch(snapshot[i]["created_at"])
              for i in ids if snapshot[i].get("handed_out_at")]
    return {
        "run_id": run_id,
        "state": state,
        "ids": ids,
        "trigger_to_deferred_s": round(deferred_after, 2),
        "creation_to_handed_out_s_max": round(max(handed), 2) if handed else None,
        "creation_to_completed_s_min": round(min(latencies), 2) if latencies else None,
        "creation_to_completed_s_max": round(max(latencies), 2) if latencies else None,
        "check": dep.check_instances(ids),
        **killed,
    }


def wait_claimed(dep: Deployment, ids: list[int], claimed: Any, timeout: float = 120) -> float:
    """Until ``claimed(dep)`` (the ids some claims record holds) covers ``ids``: the poll answers were received
    and recorded, and the drain has ended (checked every 20 ms). Returns the time."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while time.monotonic() < deadline:
        if wanted <= set(claimed(dep)):
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{ids} not all claimed within {timeout} s: {sorted(claimed(dep))}\n{dep.log_tail()}")


def variable_claims(dep: Deployment) -> set[int]:
    """Instance ids claimed in any claims record among the Variables."""
    return {int(i) for r in dep.claim_records().values() if isinstance(r, dict) for i in (r.get("claims") or {})}


def wait_watcher_running(dep: Deployment, dag_id: str, timeout: float = 180) -> float:
    """Unpause ``dag_id`` and wait until the triggerer runs its asset watcher (the dag-processor registers a
    watcher when it parses an unpaused DAG, every 30 s or so). Returns the seconds waited."""
    started = time.monotonic()
    dep.airflow("dags", "unpause", dag_id)
    while time.monotonic() - started < timeout:
        rows = dep.query("SELECT triggerer_id FROM trigger WHERE classpath LIKE '%WorkflowsoftIntegrationEventTrigger'")
        if rows and all(r[0] is not None for r in rows):
            time.sleep(1)  # its first round is under way
            return time.monotonic() - started
        dep.check_alive()
        time.sleep(0.5)
    raise AssertionError(f"the asset watcher of {dag_id} is not running after {timeout} s\n{dep.log_tail()}")


def wait_completed(dep: Deployment, ids: list[int], timeout: float = 300) -> None:
    """Until every one of ``ids`` is completed on the emulator (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {int(i["IntegrationInstanceId"]): i["status"] for i in dep.emulator.snapshot()["instances"]}
        if all(states.get(i) == "completed" for i in ids):
            return
        dep.check_alive()
        time.sleep(0.5)
    states = {int(i["IntegrationInstanceId"]): i["status"] for i in dep.emulator.snapshot()["instances"]}
    missing = [(i, states.get(i)) for i in ids if states.get(i) != "completed"]
    raise AssertionError(f"not completed after {timeout} s: {missing}\n{dep.log_tail()}")


def latencies(dep: Deployment, ids: list[int]) -> list[float]:
    """Seconds from each instance's creation to its completion, from the emulator's clock."""
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    return [iso_to_epoch(snapshot[i]["completed_at"]) - iso_to_epoch(snapshot[i]["created_at"])
            for i in ids if snapshot[i].get("completed_at")]


def assert_clean(check: dict[str, Any]) -> None:
    assert not check["lost"], check
    assert not check["duplicated"], check
    assert not check["wrong_values"], check
    assert not check["open_claims"], check
    assert check["processes_by_api"] == 0 and check["tasks"] == 0, check


def _base_env(home: Path, api_port: int, fernet_key: str, db_url: str, dags_folder: Path,
              emulator: EmulatorServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    conn = {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token"}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Quick detection of dead task processes and triggerers (the fault tests kill them).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "60",
        "AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT": json.dumps(conn),
        "WFS_DEPLOY_RECLAIM_AFTER_S": "5",
        # The event-driven example DAG (dags/workflowsoft_enrich_events_on_arrival.py): quick polls, and a
        # lease longer than any run here, so that only a lost event or a failed run hands an instance out again.
        "WORKFLOWSOFT_POLL_INTERVAL": "2",
        "WORKFLOWSOFT_RECLAIM_AFTER": "45",
        # The components import the provider from this checkout (the venv may hold another editable copy).
        # WFS_PROVIDER_PATH: another checkout's package first (bench/event_bursts.py measures the previous release).
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("WFS_PROVIDER_PATH", ""), str(REPO),
                                                  os.environ.get("PYTHONPATH", "")) if p),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env


def _dags_folder(base: Path, repo_dags: bool = True) -> Path:
    """One DAGs folder holding the repository's dags/ (unless ``repo_dags=False``) and the deployment test DAGs
    (symlinks)."""
    folder = base / "dags"
    folder.mkdir()
    if repo_dags:
        (folder / "repo_dags").symlink_to(REPO_DAGS, target_is_directory=True)
    (folder / "deployment_dags").symlink_to(TEST_DAGS, target_is_directory=True)
    return folder


def _start_common(dep: Deployment) -> None:
    dep.start("dag-processor", ["dag-processor"])
    dep.start("scheduler", ["scheduler", "--skip-serve-logs"])
    dep.start("triggerer", ["triggerer", "--skip-serve-logs"])
    dep.start("api-server", ["api-server", "--port", str(dep.api_port), "--host", "127.0.0.1", "--workers", "1"])


REPO_DAG_IDS = ["workflowsoft_approval_round_trip", "workflowsoft_enrich_events",
                "workflowsoft_enrich_events_on_arrival", "workflowsoft_failure_notifier",
                "workflowsoft_notify_crm_on_arrival", "workflowsoft_start_processes"]


def _unpause(dep: Deployment, repo_dags: bool = True) -> None:
    """Wait until the dag-processor has parsed the repository's DAGs and the test DAGs (no import error),
    then unpause the test DAGs only (the repository's scheduled DAG stays paused)."""
    dep.wait_parsed(["deploy_deferred", "deploy_batch", *(REPO_DAG_IDS if repo_dags else [])])
    errors = dep.query("SELECT filename, stacktrace FROM import_error")
    assert not errors, errors
    dep.airflow("dags", "unpause", "--treat-dag-id-as-regex", "^deploy_", "-y")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _teardown_on_sigterm() -> Iterator[None]:
    """A SIGTERM (a CI timeout) becomes KeyboardInterrupt, so the fixtures still stop every component."""
    previous = signal.signal(signal.SIGTERM, _interrupt) if ENABLED else None
    yield
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def deployment_scenario() -> dict[str, Any]:
    """The built-in scenario plus a process diagram "Burst" whose step 31 ("Take burst", the fields of step 11) only
    the event-driven burst DAG watches."""
    import airflow_provider_workflowsoft.emulator as emulator_package

    scenario = json.loads((Path(emulator_package.__file__).parent / "demo_scenario.json").read_text())
    enrich = next(s for d in scenario["process_diagrams"] for s in d["integration_steps"] if s["Id"] == STEP)
    scenario["process_diagrams"].append({"Id": 9, "Title": "Burst", "integration_steps": [
        {**enrich, "Id": BURST_STEP, "Title": "Take burst"}]})
    scenario["instances"] = []
    return scenario


@pytest.fixture(scope="module")
def deploy_emulator() -> Iterator[EmulatorServer]:
    """One emulator for a whole deployment (its instance ids keep growing, so the claims of one test never
    name another test's instances); ``once`` semantics: an instance is handed out once."""
    with EmulatorServer(deployment_scenario(), poll_semantics="once") as server:
        yield server


def embedded_database() -> str | None:
    """Why the embedded deployment runs on SQLite (``None``: it runs on PostgreSQL)."""
    if os.environ.get("WFS_EMBEDDED_DB", "").lower() == "sqlite":
        return "WFS_EMBEDDED_DB=sqlite"
    return postgres_missing()


@contextlib.contextmanager
def embedded_deployment(base: Path, emulator: EmulatorServer, *, repo_dags: bool = True) -> Iterator[Deployment]:
    """LocalExecutor: scheduler, dag-processor, triggerer and API server as separate processes, started under
    ``base`` and stopped whatever happens (also used by ``bench/``). On a fresh PostgreSQL database (dropped at
    the end) with 4 task slots, or, when :func:`embedded_database` says why not, on SQLite with 2 (the deployment's
    ``database`` and ``sqlite_reason`` tell which)."""
    sqlite_reason = embedded_database()
    with contextlib.ExitStack() as stack:
        home = base / "home"
        home.mkdir()
        if sqlite_reason is None:
            _, db_url = stack.enter_context(fresh_postgres_database("wfs_emb"))
            parallelism = "4"
        else:
            print(f"embedded deployment on SQLite, 2 task slots: {sqlite_reason}", file=sys.stderr)
            db_url = f"sqlite:///{home / 'airflow.db'}"
            parallelism = "2"
        yield stack.enter_context(_embedded(base, home, db_url, parallelism, emulator, repo_dags, sqlite_reason))


@contextlib.contextmanager
def _embedded(base: Path, home: Path, db_url: str, parallelism: str, emulator: EmulatorServer, repo_dags: bool,
              sqlite_reason: str | None) -> Iterator[Deployment]:
    fernet_key = _fernet_key()
    env = _base_env(home, free_port(), fernet_key, db_url, _dags_folder(base, repo_dags), emulator)
    env.update({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": parallelism})
    # The README's way: the connection stored in the metadata database (the tasks, the sensor's trigger and
    # the asset watcher read it through the supervisor, the trigger and the watcher asynchronously).
    del env["AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT"]
    statsd = StatsdSink()  # Airflow's metrics (the provider's among them) as a user's StatsD gets them
    env.update(statsd.env())
    dep = Deployment("embedded", base, env, fernet_key, db_url, emulator)
    dep.statsd = statsd  # type: ignore[attr-defined]
    dep.database = "SQLite" if sqlite_reason else "PostgreSQL"  # type: ignore[attr-defined]
    dep.sqlite_reason = sqlite_reason  # type: ignore[attr-defined]
    dep.parallelism = int(parallelism)  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        dep.airflow("db", "migrate", timeout=600)
        dep.airflow("connections", "add", "workflowsoft_default", "--conn-type", "workflowsoft", "--conn-host",
                    emulator.base_url, "--conn-port", str(emulator.port), "--conn-password", "demo-token")
        _start_common(dep)
        dep.wait_healthy()
        _unpause(dep, repo_dags)
        dep.startup_s = time.monotonic() - started  # type: ignore[attr-defined]
        yield dep
    finally:
        dep.stop_all()
        statsd.close()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, deploy_emulator: EmulatorServer) -> Iterator[Deployment]:
    """The embedded deployment (:func:`embedded_deployment`), one per module."""
    with embedded_deployment(tmp_path_factory.mktemp("embedded"), deploy_emulator) as dep:
        yield dep


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory, deploy_emulator: EmulatorServer) -> Iterator[Deployment]:
    """CeleryExecutor with Redis, a fresh PostgreSQL database, two Celery workers."""
    if not ENABLED:
        pytest.skip("set WFS_DEPLOYMENT=1")
    redis_url = os.environ.get("WFS_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"distributed deployment needs apache-airflow-providers-celery: {exc}")
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    rd = urllib.parse.urlsplit(redis_url)
    if not reachable(rd.hostname or "127.0.0.1", rd.port or 6379):
        pytest.skip(f"Redis not reachable at {rd.hostname}:{rd.port or 6379} (WFS_REDIS_URL)")
    queue = f"wfs_{secrets.token_hex(3)}"  # a queue of its own: another run on the same Redis never takes its tasks
    with fresh_postgres_database("wfs_deploy") as (db_name, db_url):
        base = tmp_path_factory.mktemp("distributed")
        home = base / "home"
        home.mkdir()
        fernet_key = _fernet_key()
        env = _base_env(home, free_port(), fernet_key, db_url, _dags_folder(base), deploy_emulator)
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url.replace("postgresql+psycopg2://", "postgresql://", 1),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        })
        dep = Deployment("distributed", base, env, fernet_key, db_url, deploy_emulator)
        dep.db_name = db_name  # type: ignore[attr-defined]
        try:
            started = time.monotonic()
            dep.airflow("db", "migrate", timeout=600)
            _start_common(dep)
            for worker in ("w1", "w2"):
                dep.start(worker, ["celery", "worker", "-H", f"{worker}@%h", "-c", "2", "-q", queue,
                                   "--skip-serve-logs"])
            dep.wait_healthy()
            _unpause(dep)
            dep.startup_s = time.monotonic() - started  # type: ignore[attr-defined]
            yield dep
        finally:
            dep.stop_all()
            _forget_queue(redis_url, queue)


def _forget_queue(redis_url: str, queue: str) -> None:
    """Remove what this run left in Redis: its queue's keys and the unacknowledged messages of its queue
    (a SIGKILLed worker leaves its message there until the visibility timeout)."""
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        for tag, body in (client.hgetall("unacked") or {}).items():
            if queue.encode() in body:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    except Exception as exc:  # cleanup only: never fail the run on it
        print(f"could not clean Redis of queue {queue}: {exc}")


# -- an asset watcher's records and events (test_embedded*.py) ----------------------------------------------

#: the event-driven example DAG, scheduled on step 11's Asset
EVENT_DAG = "workflowsoft_enrich_events_on_arrival"


def watcher_records(dep: Deployment) -> list[dict[str, Any]]:
    """The watcher's claims records (in the Asset state store)."""
    rows = dep.query("SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id "
                     "WHERE a.uri LIKE 'workflowsoft://%' AND s.key LIKE 'workflowsoft.claims.%'")
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


def watcher_claims(dep: Deployment) -> set[int]:
    return {int(i) for r in watcher_records(dep) for i in (r.get("claims") or {})}


def check_event_instances(dep: Deployment, ids: list[int]) -> dict[str, Any]:
    """Every instance completed exactly once with the example DAG's values; no claim left open anywhere."""
    snapshot = {int(i["IntegrationInstanceId"]): i for i in dep.emulator.snapshot()["instances"]}
    done = completions(dep.emulator)
    lost = [i for i in ids if snapshot[i]["status"] != "completed"]
    wrong = [i for i in ids if i not in lost and (
        snapshot[i]["fields"].get("Venue code") != "HALL-" + str(snapshot[i]["fields"].get("Event name"))[:3].upper()
        or snapshot[i]["fields"].get("Event exists") is not True)]
    watcher_open = sorted(int(i) for r in watcher_records(dep) for i in (r.get("claims") or {}) if int(i) in set(ids))
    handed = handed_out_in_events(dep)
    return {"instances": len(ids), "lost": lost, "duplicated": [i for i in ids if done.get(i, 0) > 1],
            "in_several_events": [i for i in ids if handed.get(i, 0) > 1],
            "wrong_values": wrong, "open_claims": sorted(i for i in dep.open_claims() if i in set(ids)),
            "watcher_open_claims": watcher_open}


def handed_out_in_events(dep: Deployment) -> dict[int, int]:
    """How many stored asset events carried each instance (a watcher must hand an instance out once; only
    an event lost with the triggerer, or a run that did not complete it within the lease, makes a second)."""
    counts: dict[int, int] = {}
    for (extra,) in dep.query("SELECT extra FROM asset_event"):
        data = json.loads(extra) if isinstance(extra, str) else extra or {}
        for instance in (data.get("payload") or {}).get("instances") or []:
            iid = int(instance["IntegrationInstanceId"])
            counts[iid] = counts.get(iid, 0) + 1
    return counts


def wait_watcher_resolved(dep: Deployment, ids: list[int], timeout: float = 60) -> None:
    """The watcher drops claims whose instances were completed at its next round (every poll interval)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(int(i) in set(ids) for r in watcher_records(dep) for i in (r.get("claims") or {})):
            return
        time.sleep(1)


def event_runs(dep: Deployment) -> list[Any]:
    return dep.query("SELECT run_id, state, run_type FROM dag_run WHERE dag_id=:d", d=EVENT_DAG)


# -- an asset watcher's records on Airflow 3.1 (a Variable, and its events' ack slots: test_embedded_airflow31.py) ---

ACKS_PREFIX = "workflowsoft.acks."


def watcher_variable_records(dep: Deployment) -> dict[str, Any]:
    """The asset watchers' claims records among the Variables (Airflow 3.1 keeps them there), by key."""
    return {k: v for k, v in dep.claim_records().items()
            if isinstance(v, dict) and str(v.get("owner", "")).startswith("asset-watcher:")}


def watcher_variable_claims(dep: Deployment) -> set[int]:
    return {int(i) for r in watcher_variable_records(dep).values() for i in (r.get("claims") or {})}


def run_claims(dep: Deployment) -> set[int]:
    """Instance ids claimed by the runs' records among the Variables (not by a watcher's)."""
    watchers = watcher_variable_records(dep)
    return {int(i) for k, r in dep.claim_records().items() if isinstance(r, dict) and k not in watchers
            for i in (r.get("claims") or {})}


def ack_slots(dep: Deployment) -> dict[str, Any]:
    """The ack slots the runs mirrored their claims into (Airflow 3.1), by key."""
    return {k: v for k, v in dep.variables().items() if k.startswith(ACKS_PREFIX)}


def wait_watcher_variables_resolved(dep: Deployment, ids: list[int], timeout: float = 60) -> bool:
    """Until the watcher's record (a Variable) holds none of ``ids`` and no ack slot is left; returns whether so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not watcher_variable_claims(dep) & set(ids) and not ack_slots(dep):
            return True
        time.sleep(1)
    return False
