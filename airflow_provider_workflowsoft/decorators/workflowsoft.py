"""``@task.workflowsoft_worker``: the batch worker operator as a TaskFlow decorator.

.. code-block:: python

    from airflow.sdk import dag, task

    @dag(schedule="*/5 * * * *")
    def enrich_events():
        @task.workflowsoft_worker(integration_step_id=11, max_workers=8)
        def enrich(fields, instance, venue_prefix):
            return {"Venue code": f"{venue_prefix}-{instance['IntegrationInstanceId']}"}

        enrich(venue_prefix="V")  # keyword arguments become op_kwargs of every call

    enrich_events()

The decorated function is called once per integration instance, exactly like the ``python_callable`` of
:class:`~airflow_provider_workflowsoft.operators.batch.WorkflowsoftIntegrationWorkerOperator`:
``f(fields, instance=..., **kwargs)``. Calling the decorated function creates the task; its keyword
arguments are passed to every call, except ``instances=``, which feeds the operator's ``instances``
(for example ``enrich(instances=wait_for_events.output)``). The decorator's own arguments are the
operator's (``integration_step_id``, ``max_workers``, ``max_instances``, ``notify_on_failure``...).
The task's XCom is the operator's report.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from airflow_provider_workflowsoft.operators.batch import WorkflowsoftIntegrationWorkerOperator
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
else:  # Airflow 2.11
    from airflow.decorators.base import DecoratedOperator, task_decorator_factory  # type: ignore[no-redef]


def _binding_shim(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its per-instance parameters (the first one and ``instance``) made optional.

    Airflow checks at parse time that the decorated function can be called with the arguments given to
    it; the worker supplies ``fields`` and ``instance`` itself at run time, once per instance.
    """
    signature = inspect.signature(func)
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    first = next((p.name for p in params if p.kind in positional), None)
    shimmed: list[inspect.Parameter] = []
    rest: list[inspect.Parameter] = []
    var_keyword: list[inspect.Parameter] = []
    for p in params:
        if p.name in (first, "instance") and p.default is inspect.Parameter.empty:
            p = p.replace(default=None)
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword.append(p)
        elif p.name == first or p.kind is inspect.Parameter.VAR_POSITIONAL:
            shimmed.append(p)
        else:  # everything else arrives by keyword (op_kwargs)
            rest.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    shimmed += rest + var_keyword

    def shim(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    shim.__signature__ = signature.replace(parameters=shimmed)  # type: ignore[attr-defined]
    shim.__name__ = getattr(func, "__name__", "workflowsoft_worker")
    shim.__doc__ = func.__doc__
    return shim


class _WorkflowsoftWorkerDecoratedOperator(DecoratedOperator, WorkflowsoftIntegrationWorkerOperator):  # type: ignore[misc,valid-type]
    """The batch worker operator built from a decorated function."""

    custom_operator_name = "@task.workflowsoft_worker"
    template_fields: Sequence[str] = (*WorkflowsoftIntegrationWorkerOperator.template_fields, "op_args")
    template_fields_renderers = {**WorkflowsoftIntegrationWorkerOperator.template_fields_renderers, "op_args": "py"}

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if op_args:
            raise TypeError(
                "@task.workflowsoft_worker tasks take keyword arguments only: the worker passes each "
                "instance's fields as the first argument"
            )
        op_kwargs = dict(op_kwargs or {})
        if "instances" in op_kwargs and "instances" not in inspect.signature(python_callable).parameters:
            kwargs["instances"] = op_kwargs.pop("instances")
        kwargs.pop("multiple_outputs", None)  # the report is one XCom value
        super().__init__(
            python_callable=_binding_shim(python_callable),
            op_args=[],
            op_kwargs=op_kwargs,
            kwargs_to_upstream={"python_callable": python_callable, "op_kwargs": op_kwargs},
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        # The report, not the function's return value, is what this task returns.
        return WorkflowsoftIntegrationWorkerOperator.execute(self, context)


def workflowsoft_worker_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Wrap a per-instance function into a :class:`WorkflowsoftIntegrationWorkerOperator` task.

    Usable as ``@workflowsoft_worker_task(integration_step_id=11, max_workers=8)`` or, with the
    provider installed, ``@task.workflowsoft_worker(...)``.

    :param python_callable: the function (given when used as a bare ``@workflowsoft_worker_task``)
    :param kwargs: arguments of the operator (not ``python_callable``, ``op_kwargs``)
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_WorkflowsoftWorkerDecoratedOperator,
        **kwargs,
    )


__all__ = ["workflowsoft_worker_task"]
