"""What completions tell OpenLineage and the Assets view: the integration step they feed.

* :func:`step_inlets`: the step's Asset (``integration_step_asset(..., watch=False)``) as a task's default
  ``inlets`` on Airflow 3, so the Assets view shows which DAGs read a step (inlets, not outlets: an outlet
  would emit an asset event on success and start the step's event-driven DAG again, with nothing to do).
* :func:`completion_lineage`: OpenLineage facets on completion (an output dataset per integration step, the
  fields written as its schema, the instances completed as its row count), when the OpenLineage provider
  is installed; ``None`` otherwise.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError


def step_inlets(kwargs: dict[str, Any], integration_step_id: Any, process_diagram_name: Any,
                integration_step_name: Any, workflowsoft_conn_id: Any) -> None:
    """Set ``kwargs["inlets"]`` to the step's Asset when the user set none and the step is known when the DAG
    is parsed (not templated)."""
    from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_0_PLUS

    if "inlets" in kwargs or not AIRFLOW_V_3_0_PLUS:
        return
    given = (integration_step_id, process_diagram_name, integration_step_name, workflowsoft_conn_id)
    if any(isinstance(v, str) and "{{" in v for v in given):
        return
    if integration_step_id in (None, "") and not (process_diagram_name and integration_step_name):
        return
    from airflow_provider_workflowsoft.assets.workflowsoft import integration_step_asset

    try:
        kwargs["inlets"] = [integration_step_asset(
            integration_step_id, process_diagram_name=process_diagram_name,
            integration_step_name=integration_step_name, workflowsoft_conn_id=workflowsoft_conn_id, watch=False)]
    except WorkflowsoftInputError:
        return  # the operator reports the bad input itself, with its own message


def step_paths(inlets: Iterable[Any]) -> list[str]:
    """The integration steps (``integration-steps/<id>`` or the by-name path) among Workflowsoft Assets."""
    from airflow_provider_workflowsoft.assets.workflowsoft import SCHEME

    paths = []
    for asset in inlets or ():
        uri = str(getattr(asset, "uri", "") or "")
        if uri.startswith(f"{SCHEME}://"):
            paths.append(urllib.parse.urlsplit(uri).path.lstrip("/"))
    return paths


def completion_lineage(base_url: str, steps: Iterable[str], fields_written: Iterable[str], completed: int) -> Any:
    """OpenLineage's ``OperatorLineage``: one output dataset per step (namespace ``workflowsoft://<tenant
    host>``, name ``integration-steps/<id>``), the fields written as its schema, ``completed`` as its row
    count. ``None`` without the OpenLineage provider."""
    from airflow_provider_workflowsoft.version_compat import openlineage_classes

    ol = openlineage_classes()
    if ol is None:
        return None
    host = urllib.parse.urlsplit(base_url).netloc or base_url
    schema = ol["SchemaDatasetFacet"](fields=[ol["SchemaDatasetFacetFields"](name=str(name), type="string")
                                              for name in sorted(set(fields_written))])
    outputs = [
        ol["OutputDataset"](
            namespace=f"workflowsoft://{host}",
            name=step,
            facets={"schema": schema},
            outputFacets={"outputStatistics": ol["OutputStatisticsOutputDatasetFacet"](rowCount=completed)},
        )
        for step in dict.fromkeys(steps)
    ]
    return ol["OperatorLineage"](outputs=outputs)


__all__ = ["completion_lineage", "step_inlets", "step_paths"]
