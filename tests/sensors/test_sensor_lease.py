"""The sensor's claim lease (``reclaim_after``) is templated: rendered values arrive as strings."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.sensors.workflowsoft import WorkflowsoftIntegrationSensor, as_timedelta


def test_reclaim_after_is_a_template_field() -> None:
    assert "reclaim_after" in WorkflowsoftIntegrationSensor.template_fields


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (dt.timedelta(minutes=5), dt.timedelta(minutes=5)),
        (None, None),
        ("", None),
        ("None", None),
        (0, dt.timedelta(0)),
        ("0", dt.timedelta(0)),
        ("3600", dt.timedelta(hours=1)),
        (90.5, dt.timedelta(seconds=90.5)),
    ],
)
def test_lease_values_accepted(given: object, expected: dt.timedelta | None) -> None:
    assert as_timedelta(given, "reclaim_after") == expected


@pytest.mark.parametrize("given", ["an hour", "-1", -5, [1]])
def test_bad_lease_is_refused_with_its_name_and_value(given: object) -> None:
    with pytest.raises(WorkflowsoftInputError, match=r"reclaim_after .*" + repr(given).replace("[", r"\[")
                       .replace("]", r"\]")):
        as_timedelta(given, "reclaim_after")
