"""Fixtures shared by the whole suite.

- a fresh token cache for every test, a client wired to requests-mock (``rm``, ``client``, ``make_client``)
  with a recording ``sleep`` and a ``clock`` that never waits;
- the vendor page's field data (``page_fields`` and its ``KEY_*``) and the request paths;
- ``emulator``: a fresh emulator on a free loopback port for each test, and ``emu``: the same with
  ``AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT`` pointing at it (no retries);
- ``FakeTI`` / ``fake_context``: the task instance and context operators, sensors and records read.

Per-directory conftests hold only what is local to them (``tests/emulator``: the raw HTTP ``Api`` wrapper;
``tests/dag_runs``: the Airflow home and ``airflow dags test``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests_mock as requests_mock_module

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.client import ClientConfig, WorkflowsoftClient
from airflow_provider_workflowsoft.emulator import EmulatorServer
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ClaimsLedger
from airflow_provider_workflowsoft.records.stores import MemoryStore

BASE = "https://api.workflowsoft.com"
TOKEN = "tok-SECRET-abcdef123456"
MINTED = "minted-SECRET-987654321"
ADMIN_LOGIN = "admin@example.com"
ADMIN_PASSWORD = "admin-PASSWORD-xyz789"

KEY_NAME = "9aae87b4-2b01-43eb-be17-d0080a225f54"
KEY_EXISTS = "3db9d864-d2ea-43f5-8907-2a350c5708d5"
KEY_START = "cdb815a3-0c60-4cd6-88b2-ef3f9becddc7"
KEY_DURATION = "4dc8a917-da0c-4cf7-a43e-064785e42785"
KEY_COUNT = "11111111-2222-3333-4444-555555555555"
KEY_STATUS = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
KEY_LOCKED = "99999999-8888-7777-6666-555555555555"

FIELDS_PATH = "/api/v2/workflows/instances/tasks/42/variables"
UPDATE_PATH = "/api/v2/workflows/instances/variables"

# What a deferring task raises (Airflow 3's task SDK; Airflow 2.11's exceptions).
try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 2.11
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]  # noqa: F401



def page_fields() -> list[dict[str, Any]]:
    """The four fields of the vendor's page, plus an integer, an option field and a read-only one."""
    return [
        {"label": "Event name", "type": "String", "key": KEY_NAME, "options": None,
         "valueJson": '"Event Test"', "isReadonly": False, "isRequired": False},
        {"label": "Event exists", "type": "Boolean?", "key": KEY_EXISTS, "options": None,
         "valueJson": "true", "isReadonly": False, "isRequired": False},
        {"label": "Event start", "type": "DateTime?", "key": KEY_START, "options": None,
         "valueJson": '"2021-08-24T21:00:00Z"', "isReadonly": False, "isRequired": False},
        {"label": "Event duration", "type": "Decimal?", "key": KEY_DURATION, "options": None,
         "valueJson": "1640.0", "isReadonly": False, "isRequired": False},
        {"label": "Attendees", "type": "Int32?", "key": KEY_COUNT, "options": None,
         "valueJson": "12", "isReadonly": False, "isRequired": False},
        {"label": "Status", "type": "String", "key": KEY_STATUS, "options": ["Open", "Closed"],
         "valueJson": '"Open"', "isReadonly": False, "isRequired": False},
        {"label": "Locked", "type": "String", "key": KEY_LOCKED, "options": None,
         "valueJson": '"fixed"', "isReadonly": True, "isRequired": False},
    ]


class SleepRecorder:
    """Stands in for ``time.sleep``: records the waits, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clear_token_cache() -> Iterator[None]:
    protocol.TOKEN_CACHE.clear()
    yield
    protocol.TOKEN_CACHE.clear()


@pytest.fixture
def sleep() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def token_cache(clock: FakeClock) -> protocol.TokenCache:
    return protocol.TokenCache(clock=clock)


@pytest.fixture
def rm() -> Iterator[requests_mock_module.Mocker]:
    with requests_mock_module.Mocker() as mocker:
        yield mocker


@pytest.fixture
def make_client(sleep: SleepRecorder, token_cache: protocol.TokenCache) -> Callable[..., WorkflowsoftClient]:
    def build(**options: Any) -> WorkflowsoftClient:
        client_kwargs = {k: options.pop(k) for k in ("on_token", "rand", "on_request") if k in options}
        if "login" not in options and "api_token" not in options:
            options["api_token"] = TOKEN
        config = ClientConfig(**options)
        return WorkflowsoftClient(
            config, sleep=sleep, token_cache=token_cache, rand=client_kwargs.pop("rand", lambda: 0.0),
            **client_kwargs,
        )

    return build


@pytest.fixture
def client(make_client: Callable[..., WorkflowsoftClient]) -> WorkflowsoftClient:
    return make_client()


def body_of(request: Any) -> Any:
    """The JSON body a request sent."""
    return json.loads(request.text)


# ---------------------------------------------------------------------------------------------------
# The emulator over loopback
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def store() -> MemoryStore:
    """Records in memory, injected as ``ledger_store`` (a test's claims never reach Airflow)."""
    return MemoryStore()


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator (built-in demo scenario) on a free loopback port, stopped after the test."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """The emulator, with ``AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT`` pointing at it (static token, no retries)."""
    conn = {"conn_type": "workflowsoft", "host": emulator.base_url, "password": "demo-token",
            "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_WORKFLOWSOFT_DEFAULT", json.dumps(conn))
    return emulator


@pytest.fixture
def emu_client(emu: EmulatorServer) -> Iterator[WorkflowsoftClient]:
    """A client of the emulator (static token, no retries), closed after the test."""
    with WorkflowsoftClient(ClientConfig(base_url=emu.base_url, api_token="demo-token", max_retries=0)) as c:
        yield c


def second_drain(store: MemoryStore, at: float, offered: list[Any], lease: Any, run: str = "run2",
                 conn_id: str = "workflowsoft_default") -> threading.Thread:
    """Another run's check of step 11, ``at`` seconds from now (in a thread): what it was offered, into ``offered``."""

    def drain() -> None:
        time.sleep(at)
        ledger = ClaimsLedger(conn_id, store, owner=f"dag/{run}/wait/-1")
        offered.extend(i["IntegrationInstanceId"] for i in ledger.prepare_drain(11, lease, 10)[0])

    thread = threading.Thread(target=drain)
    thread.start()
    return thread


def instance_status(emu: EmulatorServer, iid: int) -> str:
    """The emulator's status of one integration instance (``waiting``, ``handed_out``, ``completed``)."""
    return {v["IntegrationInstanceId"]: v for v in emu.snapshot()["instances"]}[iid]["status"]  # type: ignore[no-any-return]


#: Modules that take from ten seconds to minutes (each a deployment of Airflow's components or ``airflow dags test``
#: runs), longest first (as measured with ``--durations``). pytest-xdist (``--dist loadfile``) hands out modules in
#: collection order: starting these first keeps the suite's wall time near its longest module instead of a long module
#: starting last.
SLOW_MODULES = (
    "test_embedded.py", "test_embedded_bursts.py", "test_embedded_round_trips.py", "test_dags.py",
    "test_poison_and_claims.py", "test_batch_kill.py", "test_reliability.py", "test_chaos.py", "test_batch_lease.py",
    "test_sensor_lease.py", "test_readme.py", "test_readme_journeys.py", "test_batch_scale_out.py",
    "test_start_on_behalf_of.py", "test_bad_input_dag.py", "test_connection_in_database.py", "test_batch_dag.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, run the slow modules first (see ``SLOW_MODULES``); the order within a module is kept.

    The workers collect (xdist sets their ``numprocesses`` to None, so ``workerinput`` tells them apart), and the
    controller hands out modules in the order they report (with ``--no-loadscope-reorder``, as ``make test`` runs)."""
    if not hasattr(config, "workerinput"):
        return
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))


# ---------------------------------------------------------------------------------------------------
# A task instance and its context, as operators, sensors and the records read them
# ---------------------------------------------------------------------------------------------------


@dataclass
class FakeTI:
    """The task instance attributes the package reads (ids, try number, log URL) and XCom pushes."""

    task_id: str = "task"
    dag_id: str = "dag"
    run_id: str = "run1"
    map_index: int = -1
    try_number: int = 1
    log_url: str = "http://airflow/log"
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def fake_context(task_id: str = "task", run_id: str = "run1", map_index: int = -1, try_number: int = 1,
                 *, dag_id: str = "dag") -> dict[str, Any]:
    """A task context: its ``ti`` (a :class:`FakeTI`) and ``run_id``."""
    ti = FakeTI(task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index, try_number=try_number)
    return {"ti": ti, "run_id": run_id}


@contextlib.contextmanager
def fails_without_retries(error: type[BaseException], match: str | None = None) -> Iterator[Any]:
    """Expect a task method to fail without retries: Airflow's ``AirflowFailException``, caused by ``error``."""
    from airflow_provider_workflowsoft.version_compat import AirflowFailException

    with pytest.raises(AirflowFailException, match=match) as info:
        yield info
    assert type(info.value) is AirflowFailException  # plainly Airflow's exception, no class built for it
    assert isinstance(info.value.__cause__, error), info.value.__cause__


# ---------------------------------------------------------------------------------------------------
# Claims as a reader sees them (connection workflowsoft_default)
# ---------------------------------------------------------------------------------------------------


def claim_of(store: MemoryStore, iid: Any) -> dict[str, Any] | None:
    """An instance's newest claim as any reader sees it (``state``, ``owner``, ...), or None."""
    for entry in ClaimsLedger("workflowsoft_default", store, owner="reader").list_claims(include_done=True):
        if entry["integration_instance_id"] == iid:
            return entry
    return None


def own_state(store: MemoryStore, ctx: dict[str, Any], iid: Any) -> str | None:
    """What a later try of that task instance reads back (a fresh ledger)."""
    return ClaimsLedger("workflowsoft_default", store, owner=naming.owner_from_context(ctx)).own_state(iid)
