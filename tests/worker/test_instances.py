"""What the batch worker reads as its ``instances``: the claims operators' reading of instance ids, plus dicts."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.operators.workflowsoft import _instance_ids
from airflow_provider_workflowsoft.worker.engine import normalise_instances

SHAPES = [
    (None, []), (5001, [5001]), ("5001", [5001]), ("5001, 5002", [5001, 5002]), ([5001, "5002", 5001], [5001, 5002]),
    ((5001,), [5001]), ("[5001, 5002]", [5001, 5002]), ({"IntegrationInstanceId": 5001}, [5001]),
    ({"integration_instance_id": "5001"}, [5001]), ([{"integrationInstanceId": 5001}], [5001]),
    ('{"IntegrationInstanceId": 5001, "ProcessInstanceId": 91}', [5001]),
    ('[{"integration_instance_id": 5001}, 5002]', [5001, 5002]),
]


@pytest.mark.parametrize(("given", "expected"), SHAPES)
def test_the_worker_and_the_claims_operators_accept_the_same_shapes(given: Any, expected: list[int]) -> None:
    ids = [i["IntegrationInstanceId"] for i in normalise_instances(given)]
    assert ids == expected
    assert ids == list(dict.fromkeys(_instance_ids(given)))  # the worker deduplicates, the operators do not
    assert ids or given is None


def test_the_worker_keeps_what_an_instance_dict_says_even_given_as_json_text() -> None:
    given = ['{"IntegrationInstanceId": "5001", "ProcessInstanceId": 91, "reclaimed": true}',
             {"integration_instance_id": 5002, "ack": 7}, "5001"]
    assert normalise_instances(given) == [
        {"IntegrationInstanceId": 5001, "ProcessInstanceId": 91, "reclaimed": True},
        {"IntegrationInstanceId": 5002, "ack": "7"},
    ]


@pytest.mark.parametrize(("given", "reason"), [
    ([{"ProcessInstanceId": 3}],
     r"instances: \{'ProcessInstanceId': \.\.\.\} .*is refused: integration_instance_id must"),
    ("[1, 2", r"instances: '\[1, 2' is refused: it is not valid JSON"),
    ("5001, -1", r"instances: ' -1' \(item 2\) is refused"),
    ("", r"instances: '' is refused: it is blank \(give None for no instances\)"),
    ("  ", r"instances: '  ' is refused: it is blank"),
    (5.0, r"instances: 5.0 is refused: give integration instances"),
])
def test_the_worker_refuses_naming_the_argument_the_value_and_why(given: Any, reason: str) -> None:
    with pytest.raises(WorkflowsoftInputError, match=reason):
        normalise_instances(given)


def test_a_refusal_names_the_bad_instance_not_the_fields_of_the_others() -> None:
    # A sensor's XCom with fetch_fields=True carries every instance's field values: only the bad item is named.
    given = [{"IntegrationInstanceId": 5001, "fields": {"Password": "s3cret"}},
             {"ProcessInstanceId": 3, "Secret note": "n0te"}]
    with pytest.raises(WorkflowsoftInputError, match=r"\(item 2\)") as refused:
        normalise_instances(given)
    assert "s3cret" not in str(refused.value)  # another instance's values
    assert "n0te" not in str(refused.value) and "'Secret note': ..." in str(refused.value)  # nor the bad one's
    with pytest.raises(WorkflowsoftInputError) as refused:
        normalise_instances([{"ProcessInstanceId": 3, "note": "x" * 5000}])
    assert len(str(refused.value)) < 700  # the bad item itself, cut short (it was over 5,000 characters)
