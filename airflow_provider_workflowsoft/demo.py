"""``make demo``: the example DAGs run in real Airflow against a local Workflowsoft emulator.

Run as ``python -m airflow_provider_workflowsoft.demo``. It starts the emulator on a free loopback port,
prepares a SQLite ``AIRFLOW_HOME`` under ``.demo/`` (migrated once, so reruns are fast), points the
``workflowsoft_default`` connection at the emulator through ``AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT``, queues
a few integration instances, runs the example DAGs with ``airflow dags test`` and prints what happened
in Workflowsoft, read back from the emulator's state. The emulator stops whatever happens.

Nothing here imports Airflow: Airflow runs in subprocesses, exactly as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airflow_provider_workflowsoft.emulator import EmulatorServer

#: The integration instances queued for the ETL DAG: (event name, category) of each.
DEMO_EVENTS = [
    ("Data Summit 2026", "Conference"),
    ("Airflow Hands-on", "Workshop"),
    ("Quarterly Review", "Webinar"),
]

DAGS = ["workflowsoft_enrich_events", "workflowsoft_start_processes", "workflowsoft_approval_round_trip"]


def _airflow_env(home: Path, dags_folder: Path, emulator: EmulatorServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The approval round trip's sensor polls every second while the process has not reached its step.
            "WORKFLOWSOFT_POLL_INTERVAL": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT": json.dumps(
                {"conn_type": "workflowsoft", "host": emulator.base_url, "password": emulator.static_token}
            ),
        }
    )
    return env


def _run(command: list[str], env: dict[str, str], log_file: Path) -> int:
    with log_file.open("w") as out:
        return subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def _print_summary(snapshot: dict[str, Any]) -> None:
    # The ETL DAG works on step 11; the processes started by the second DAG queue step-21 instances.
    instances = [i for i in snapshot.get("instances", []) if i.get("integration_step_id") == 11]
    completed = [i for i in instances if i.get("status") == "completed"]
    print("\nIntegration instances completed by the ETL DAG (step 'Enrich event'):")
    for instance in completed:
        fields = instance.get("fields", {})
        shown = ", ".join(f"{label}={value!r}" for label, value in fields.items())
        print(f"  #{instance['IntegrationInstanceId']} ({instance.get('integration_step_title')}), "
              f"completed by {instance.get('completed_by')}: {shown}")
    if not completed:
        print("  (none)")
    still_open = [i["IntegrationInstanceId"] for i in instances if i.get("status") != "completed"]
    if still_open:
        print(f"  still open: {still_open}")
    api_processes = [p for p in snapshot.get("processes", []) if p.get("source") == "api"]
    print("\nProcesses started:")
    for process in api_processes:
        print(f"  #{process['id']} {process['title']!r} on behalf of user {process.get('created_by')}"
              + (f" with fields {process['fields']}" if process.get("fields") else ""))
    if not api_processes:
        print("  (none)")
    print("\nApproval round trips (the process reached its 'Approval decision' step after 2 s):")
    trips = [i for i in snapshot.get("instances", []) if i.get("integration_step_id") == 41]
    for instance in trips:
        fields = instance.get("fields", {})
        print(f"  process #{instance['ProcessInstanceId']}: decision {fields.get('Decision')!r}, "
              f"{instance.get('status')}: Order number={fields.get('Order number')!r}, Reply={fields.get('Reply')!r}")
    if not trips:
        print("  (none)")
    print("\nTasks created:")
    for task in snapshot.get("tasks", []):
        print(f"  #{task['id']} {task['title']!r} assigned to user {task.get('assigned_user_id')}, "
              f"created on behalf of user {task.get('created_by')}")
    if not snapshot.get("tasks"):
        print("  (none)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", default=".demo", help="where AIRFLOW_HOME and logs go (default .demo)")
    parser.add_argument("--dags-folder", default="dags", help="the example DAGs (default dags)")
    parser.add_argument("--poll-semantics", default="once", choices=["once", "until-completed"])
    args = parser.parse_args(argv)

    workdir = Path(args.workdir).resolve()
    home = workdir / "airflow"
    logs = workdir / "logs"
    home.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    dags_folder = Path(args.dags_folder).resolve()
    started = time.monotonic()
    failures = []

    with EmulatorServer(poll_semantics=args.poll_semantics) as emulator:
        env = _airflow_env(home, dags_folder, emulator)
        print(f"Workflowsoft emulator at {emulator.base_url} (scenario: built-in demo)")
        # Reruns keep the migrated database: only the first run pays for the migration.
        if not (home / ".migrated").exists():
            print("Preparing Airflow (SQLite, first run only)...")
            if _run([sys.executable, "-m", "airflow", "db", "migrate"], env, logs / "db-migrate.log") != 0:
                print(f"airflow db migrate failed: see {logs / 'db-migrate.log'}")
                return 1
            (home / ".migrated").touch()
        for name, category in DEMO_EVENTS:
            emulator.create_instances(11, count=1, values={"Event name": name, "Category": category})
        print(f"Queued {len(DEMO_EVENTS)} 'Enrich event' integration instances")
        for dag_id in DAGS:
            if not (dags_folder / f"{dag_id}.py").exists():
                continue
            print(f"Running DAG {dag_id} with `airflow dags test`...", flush=True)
            log_file = logs / f"{dag_id}.log"
            code = _run([sys.executable, "-m", "airflow", "dags", "test", dag_id], env, log_file)
            shown = log_file.relative_to(Path.cwd()) if log_file.is_relative_to(Path.cwd()) else log_file
            print(f"  {'succeeded' if code == 0 else 'FAILED'} (log: {shown})")
            if code != 0:
                failures.append(dag_id)
        snapshot = emulator.snapshot()

    _print_summary(json.loads(json.dumps(snapshot, default=str)))
    print(f"\nDone in {time.monotonic() - started:.0f} s; the emulator is stopped.")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
