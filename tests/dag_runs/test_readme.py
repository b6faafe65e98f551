"""The README is a promise: its first DAG runs green in real Airflow, and its commands exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_workflowsoft.emulator import EmulatorServer
from tests.dag_runs.conftest import (
    RunDag,
    assert_dag_failed,
    assert_dag_succeeded,
    needs_airflow_3_readme,
    readme_python_block,
)

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_readme_shows_the_two_commands() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"


def test_readme_links_exist() -> None:
    for link in re.findall(r"\]\(((?:docs|dags)/[^)#]+)\)", README):
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"


@pytest.mark.airflow
@needs_airflow_3_readme
def test_first_dag_of_the_readme_runs_green(dags_folder: Path, run_dag: RunDag) -> None:
    state = _run_readme_dag(dags_folder, run_dag, readme_python_block("## A first DAG"), "enrich_events",
                            count=3, event_name="Data Summit", venue_code="HALL-DAT")
    started = [p for p in state["processes"] if p["source"] == "api"]
    assert [(p["process_diagram_id"], p["created_by"]) for p in started] == [(2, 1)]
    assert [(t["title"].startswith("Events enriched for "), t["assigned_user_id"], t["created_by"])
            for t in state["tasks"]] == [(True, 2, 1)]


@pytest.mark.airflow
@needs_airflow_3_readme
def test_first_dag_of_the_0_3_readme_still_runs_green(dags_folder: Path, run_dag: RunDag) -> None:
    """The 0.3 README's shape (``compute.expand`` -> ``WorkflowsoftCompleteStepOperator.partial().expand_kwargs``)
    keeps working: nothing it uses was removed."""
    source = (Path(__file__).parent / "readme_0_3" / "first_dag.py").read_text()
    _run_readme_dag(dags_folder, run_dag, source, "enrich_events", count=3, event_name="Data Summit",
                    venue_code="HALL-DAT")


@pytest.mark.airflow
@needs_airflow_3_readme
def test_batch_worker_of_the_readme_runs_green(dags_folder: Path, run_dag: RunDag) -> None:
    _run_readme_dag(dags_folder, run_dag, _readme_batch_dag(), "readme_batch", count=12, event_name="Workshop day",
                    venue_code="HALL-WOR")


@pytest.mark.airflow
@needs_airflow_3_readme
def test_batch_worker_of_the_readme_completes_the_others_when_one_fails(dags_folder: Path, run_dag: RunDag) -> None:
    """The README says the batch worker isolates failures too: one instance of six fails in the function;
    the five others are completed, the task fails naming the failed one."""
    names: list[str | None] = ["Workshop day"] * 3 + [None] + ["Workshop day"] * 2
    result, created, state = _run_block(dags_folder, run_dag, _readme_batch_dag(), "readme_batch", names)
    assert_dag_failed(result)
    assert f"{created[3]['IntegrationInstanceId']}: TypeError" in result.stdout, result.stdout[-6000:]
    _assert_completed(state, created[:3] + created[4:], "HALL-WOR")
    failing = next(i for i in state["instances"] if i["IntegrationInstanceId"] == created[3]["IntegrationInstanceId"])
    assert failing["status"] != "completed", failing


def _readme_batch_dag() -> str:
    """The README's batch worker block in a DAG of its own."""
    return (
        readme_python_block("## Bursts: the batch worker")
        + "\n\nimport pendulum\nfrom airflow.sdk import dag\n\n\n"
        + "@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)\n"
        + "def readme_batch():\n    enrich()\n\n\nreadme_batch()\n"
    )


def _run_readme_dag(dags_folder: Path, run_dag: RunDag, source: str, dag_id: str, *, count: int, event_name: str,
                    venue_code: str) -> dict[str, Any]:
    """Run a DAG made of a README block against a fresh emulator; assert every instance was completed with
    the values the README's function computes; return the emulator's final state."""
    result, created, state = _run_block(dags_folder, run_dag, source, dag_id, [event_name] * count)
    assert_dag_succeeded(result)
    _assert_completed(state, created, venue_code)
    return state


def _run_block(dags: Path, run_dag: RunDag, source: str, dag_id: str, event_names: list[str | None]
               ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, int]], dict[str, Any]]:
    """Run ``source`` (saved as the DAGs folder's only file) with one instance per event name queued first;
    return the finished run, the instances created (in order) and the emulator's final state."""
    (dags / f"{dag_id}.py").write_text(source)
    with EmulatorServer() as emulator:
        created = [emulator.create_instances(11, values={"Event name": name})[0] for name in event_names]
        result = run_dag(dag_id, emulator=emulator, dags_folder=dags)
        state = emulator.snapshot()
    return result, created, state


def _assert_completed(state: dict[str, Any], instances: list[dict[str, int]], venue_code: str) -> None:
    by_id = {i["IntegrationInstanceId"]: i for i in state["instances"]}
    for instance in instances:
        done = by_id[instance["IntegrationInstanceId"]]
        assert done["status"] == "completed", done
        assert (done["fields"]["Venue code"], done["fields"]["Event exists"]) == (venue_code, True)


@pytest.mark.airflow
@needs_airflow_3_readme
def test_event_driven_dag_of_the_readme_is_the_example_dag() -> None:
    """The README's event-driven block builds a DAG scheduled on the watched step Asset, with the same tasks
    as dags/workflowsoft_enrich_events_on_arrival.py, which tests/deployment runs under a real triggerer."""
    from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS

    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("asset watchers with a state store: Airflow 3.3+")
    namespace: dict[str, Any] = {"__name__": "readme_event_driven"}
    exec(compile(readme_python_block("## Event-driven runs: the step as an Asset"), "README.md", "exec"), namespace)
    example: dict[str, Any] = {"__name__": "example_event_driven"}
    path = REPO / "dags" / "workflowsoft_enrich_events_on_arrival.py"
    exec(compile(path.read_text(), str(path), "exec"), example)
    readme_asset, example_asset = namespace["ENRICH_EVENT"], example["ENRICH_EVENT"]
    assert readme_asset.uri == example_asset.uri
    assert [w.trigger.serialize()[0] for w in readme_asset.watchers] == [
        w.trigger.serialize()[0] for w in example_asset.watchers]
    readme_dag = namespace["enrich_events_on_arrival"]()
    example_dag = example["workflowsoft_enrich_events_on_arrival"]()
    assert sorted(readme_dag.task_ids) == sorted(example_dag.task_ids) == ["arrived", "enrich"]
    assert namespace["enrich"]({"Event name": "Data Summit"}, {}) == {"Venue code": "HALL-DAT", "Event exists": True}


def test_message_queue_dag_of_the_readme_is_the_example_dag() -> None:
    """The README's MessageQueueTrigger block watches the same step with the same watcher as
    dags/workflowsoft_notify_crm_on_arrival.py (which tests/deployment runs), and the deadline-alert block builds."""
    from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS

    if not AIRFLOW_V_3_3_PLUS:
        pytest.skip("asset watchers with a state store: Airflow 3.3+")
    pytest.importorskip("airflow.providers.common.messaging", reason="the messaging extra")
    namespace: dict[str, Any] = {"__name__": "readme_message_queue"}
    exec(compile(readme_python_block('`MessageQueueTrigger(scheme="workflowsoft")`'), "README.md", "exec"), namespace)
    example: dict[str, Any] = {"__name__": "example_message_queue"}
    path = REPO / "dags" / "workflowsoft_notify_crm_on_arrival.py"
    exec(compile(path.read_text(), str(path), "exec"), example)
    (readme_watcher,), (example_watcher,) = namespace["NOTIFY_CRM"].watchers, example["NOTIFY_CRM"].watchers
    readme_kwargs, example_kwargs = readme_watcher.trigger.serialize()[1], example_watcher.trigger.serialize()[1]
    assert readme_watcher.trigger.serialize()[0].endswith("WorkflowsoftIntegrationEventTrigger")
    assert {k: readme_kwargs[k] for k in ("process_diagram_name", "integration_step_name", "max_instances")} == {
        k: example_kwargs[k] for k in ("process_diagram_name", "integration_step_name", "max_instances")}
    assert sorted(namespace["notify_crm_on_arrival"]().task_ids) == sorted(
        example["workflowsoft_notify_crm_on_arrival"]().task_ids) == ["arrived", "notify"]
    deadline: dict[str, Any] = {"__name__": "readme_deadline"}
    exec(compile(readme_python_block("**A task for a person when a DAG run is late"), "README.md", "exec"), deadline)
    assert deadline["nightly_load"]().deadline  # the alert is on the DAG


# -- the Reference tables name every parameter ------------------------------------------------------------

#: What the Reference must show, by the name it gives each (a module path under the package, or a hook method).
REFERENCE_NAMES = (
    "WorkflowsoftHook",
    "sensors.workflowsoft.WorkflowsoftIntegrationSensor",
    "assets.workflowsoft.integration_step_asset",
    "assets.workflowsoft.instances_from_events",
    "operators.workflowsoft.WorkflowsoftGetFieldsOperator",
    "operators.workflowsoft.WorkflowsoftUpdateFieldsOperator",
    "operators.workflowsoft.WorkflowsoftCompleteStepOperator",
    "operators.workflowsoft.WorkflowsoftStartProcessOperator",
    "operators.workflowsoft.WorkflowsoftCreateTaskOperator",
    "operators.batch.WorkflowsoftIntegrationWorkerOperator",
    "operators.workflowsoft.WorkflowsoftListClaimsOperator",
    "operators.workflowsoft.WorkflowsoftReleaseClaimsOperator",
    "notifications.workflowsoft.WorkflowsoftNotifier",
    "test_connection",
)
#: Old names of parameters (old -> new), kept working with a warning; the Reference says so once, not in every row.
#: A hook method's new parameter defaults to None only so that the old keyword may stand in for it: the row shows
#: it required, as it is to a caller who gives neither.
DEPRECATED_PARAMETERS = {"integration_diagram_id": "integration_step_id"}
_SIGNATURE = re.compile(r"`([A-Za-z_][\w.]*)\(([^`]*)\)`")
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _split_arguments(text: str) -> list[str]:
    """``a, b=f(1, 2), c="x, y"`` -> ``["a", "b=f(1, 2)", 'c="x, y"']``: commas at the top level only."""
    parts, depth, quote, current = [], [], "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in _PAIRS:
            depth.append(_PAIRS[char])
        elif depth and char == depth[-1]:
            depth.pop()
        elif char == "," and not depth:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    return [p for p in [*parts, current.strip()] if p]


def hook_api_methods() -> list[str]:
    """The calls of the API the hook hands on to its client: its own public methods the client also has."""
    from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
    from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

    return sorted(name for name, value in vars(WorkflowsoftHook).items()
                  if callable(value) and not name.startswith("_") and hasattr(WorkflowsoftClient, name))


def _reference_target(name: str) -> Any:
    """The class, function or hook method a Reference row names, or None for any other code."""
    import importlib

    from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

    if name == "WorkflowsoftHook":
        return WorkflowsoftHook
    if name == "test_connection" or name in hook_api_methods():
        return getattr(WorkflowsoftHook, name)
    module, _, attribute = name.rpartition(".")
    if not module or name.startswith("."):
        return None
    try:
        return getattr(importlib.import_module(f"airflow_provider_workflowsoft.{module}"), attribute)
    except (ImportError, AttributeError):
        return None


def _parameters(target: Any) -> dict[str, Any]:
    """Name -> default (``inspect.Parameter.empty`` when required) of a function, or of a class's ``__init__``
    along its own (this package's) bases: what a user may pass, without ``self`` and ``**kwargs``."""
    import inspect

    functions = [target]
    if inspect.isclass(target):
        functions = [c.__dict__["__init__"] for c in target.__mro__
                     if c.__module__.startswith("airflow_provider_workflowsoft") and "__init__" in c.__dict__]
    found: dict[str, Any] = {}
    for function in functions:
        for p in inspect.signature(function).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p.default)
    if not inspect.isclass(target):
        for old, renamed in DEPRECATED_PARAMETERS.items():
            if old in found and found.get(renamed) is None:
                found[renamed] = inspect.Parameter.empty
    return {k: v for k, v in found.items() if k not in DEPRECATED_PARAMETERS}


def _documented_default(text: str) -> Any:
    """The value a README default stands for, or ``...`` when it is prose (``<...>``) rather than code."""
    import datetime as dt

    try:
        return eval(text, {"__builtins__": {}}, {"timedelta": dt.timedelta, "None": None, "True": True,
                                                 "False": False})
    except Exception:
        return ...


def test_reference_tables_name_every_parameter() -> None:
    """Every public class, function and hook method in the README's Reference is shown with all its
    parameters and their defaults, as the code has them: adding a parameter means adding it to its row."""
    import inspect

    reference = README.split("## Reference\n", 1)[1].split("\n## ", 1)[0]
    shown: dict[str, list[str]] = {}
    for name, arguments in _SIGNATURE.findall(reference):
        if _reference_target(name) is not None:
            shown.setdefault(name, _split_arguments(arguments))
    problems = [f"{name}: not in the Reference with its parameters"
                for name in (*REFERENCE_NAMES, *hook_api_methods()) if name not in shown]
    for name, arguments in shown.items():
        actual = _parameters(_reference_target(name))
        given: dict[str, str | None] = {}
        for argument in arguments:
            key, equals, text = argument.lstrip("*").partition("=")
            if key.strip():
                given[key.strip()] = text.strip() if equals else None
        for parameter, default in actual.items():
            has_default = default is not inspect.Parameter.empty
            shown_default = given.get(parameter)
            if parameter not in given:
                problems.append(f"{name}: parameter {parameter!r} missing"
                                + (f" (default {default!r})" if has_default else ""))
            elif has_default and shown_default is None:
                problems.append(f"{name}: parameter {parameter!r} needs its default ({default!r})")
            elif not has_default and shown_default is not None:
                problems.append(f"{name}: parameter {parameter!r} has no default in the code")
            elif shown_default is not None and (value := _documented_default(shown_default)) is not ... \
                    and value != default:
                problems.append(f"{name}: {parameter}={shown_default} but the code's default is {default!r}")
        problems += [f"{name}: {parameter!r} is not a parameter" for parameter in given if parameter not in actual]
    assert not problems, "README's Reference is out of date:\n" + "\n".join(problems)
