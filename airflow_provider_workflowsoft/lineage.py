"""What completions tell OpenLineage: the integration step they feed.

* :func:`step_paths`: the integration steps among a task's Workflowsoft Assets (its ``inlets``);
* :func:`completion_lineage`: OpenLineage facets on completion (an output dataset per integration step, the
  fields written as its schema, the instances completed as its row count), when the OpenLineage provider
  is installed; ``None`` otherwise.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any

from airflow_provider_workflowsoft.assets.workflowsoft import SCHEME


def step_paths(inlets: Iterable[Any]) -> list[str]:
    """Return the integration steps (``integration-steps/<id>`` or the by-name path) among Workflowsoft Assets."""
    paths = []
    for asset in inlets or ():
        uri = str(getattr(asset, "uri", "") or "")
        if uri.startswith(f"{SCHEME}://"):
            paths.append(urllib.parse.urlsplit(uri).path.lstrip("/"))
    return paths


def completion_lineage(base_url: str, steps: Iterable[str], fields_written: Iterable[str], completed: int) -> Any:
    """OpenLineage's ``OperatorLineage``.

    One output dataset per step (namespace ``workflowsoft://<tenant host>``, name ``integration-steps/<id>``), the
    fields written as its schema, ``completed`` as its row count. ``None`` without the OpenLineage provider.
    """
    ol = openlineage_classes()
    if ol is None:
        return None
    parts = urllib.parse.urlsplit(base_url)
    host = (parts.hostname or base_url) + (f":{parts.port}" if parts.port else "")  # never any user info
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


__all__ = ["completion_lineage", "step_paths"]


def openlineage_classes() -> dict[str, Any] | None:
    """Return the OpenLineage classes completions report with, or ``None`` without the OpenLineage provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    if OutputDataset is None:  # common.compat's placeholder when the OpenLineage client is missing
        return None
    return {"OperatorLineage": OperatorLineage, "OutputDataset": OutputDataset,
            "OutputStatisticsOutputDatasetFacet": OutputStatisticsOutputDatasetFacet,
            "SchemaDatasetFacet": SchemaDatasetFacet, "SchemaDatasetFacetFields": SchemaDatasetFacetFields}
