"""The batch worker's XCom report size against the batch size: the bounded default and ``full_report=True``.

``python bench/report_size.py`` (``REPORT_SIZES=1000,10000,100000`` to change the sizes). The engine runs against an
in-memory API (no HTTP: the report's size does not depend on the server) with claims in memory; each instance's
callable returns the values of the README's example (about 87 bytes of written values per instance in the report),
and one instance in 500 fails. Prints one Markdown table (JSON bytes of the report, as Airflow stores the XCom).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore
from airflow_provider_workflowsoft.worker.engine import WorkerEngine

SIZES = [int(n) for n in os.environ.get("REPORT_SIZES", "1000,10000,100000").split(",")]


class InMemoryApi:
    """Poll, read and complete answered from memory (the engine's three calls; also used by the report tests).

    :param count: instances 1 to ``count`` are handed out once each
    :param failing: the ids whose completion is refused (default: one in 500)
    :param error_chars: how long the refusal's text is made (0: as it is)
    """

    def __init__(self, count: int, failing: set[int] | None = None, error_chars: int = 0) -> None:
        self._next = iter(range(1, count + 1))
        self._lock = threading.Lock()
        self.failing = set(range(500, count + 1, 500)) if failing is None else failing
        self.error_chars = error_chars

    def poll_new_integration(self, step: Any) -> dict[str, Any] | None:
        with self._lock:
            iid = next(self._next, None)
        return None if iid is None else {"IntegrationInstanceId": iid, "ProcessInstanceId": iid}

    def get_fields(self, iid: Any) -> list[Any]:
        return []

    def update_and_complete(self, iid: Any, values: Any, **kwargs: Any) -> dict[str, Any]:
        if iid in self.failing:
            text = f"Workflowsoft refused the completion of {iid}: a required field is empty"
            raise RuntimeError(text.ljust(self.error_chars, "."))
        return {"fields": dict(values or {}), "already_completed": False}


def enrich(fields: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
    return {"Venue code": f"HALL-{instance['IntegrationInstanceId'] % 1000:03d}", "Event exists": True,
            "Category": "Conference", "Attendees": 120}


def main() -> None:
    print("| instances | report | XCom bytes | bytes per instance | seconds |")
    print("|---:|---|---:|---:|---:|")
    for n in SIZES:
        for full in (False, True):
            started = time.perf_counter()
            report = WorkerEngine(InMemoryApi(n), enrich, integration_step_id=11, max_instances=n, max_workers=16,
                                 claims=ClaimsLedger("bench", MemoryStore(), owner="bench/run/work/-1"),
                                 progress_interval=None, full_report=full).run()
            size = len(json.dumps(report))
            print(f"| {n:,} | {'full_report=True' if full else 'default (report_ids_limit=100)'} | {size:,} | "
                  f"{size / n:.1f} | {time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
