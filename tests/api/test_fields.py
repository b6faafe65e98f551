"""The typed field model: reading valueJson by type, resolving names, validating writes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_provider_workflowsoft.api import fields as F
from airflow_provider_workflowsoft.api.errors import (
    WorkflowsoftInputError,
    WorkflowsoftResponseError,
    WorkflowsoftValidationError,
)
from tests.conftest import KEY_COUNT, KEY_DURATION, KEY_EXISTS, KEY_NAME, KEY_START, page_fields


@pytest.fixture
def fields() -> list[F.Field]:
    return F.parse_fields(page_fields(), instance_id=42)


def test_page_fields_parse_to_typed_values(fields: list[F.Field]) -> None:
    values = F.field_values(fields)
    assert values["Event name"] == "Event Test"
    assert values["Event exists"] is True
    start = values["Event start"]
    assert start == dt.datetime(2021, 8, 24, 21, 0, tzinfo=dt.UTC)
    assert start.tzinfo is not None
    duration = values["Event duration"]
    assert isinstance(duration, Decimal) and str(duration) == "1640.0"
    assert values["Attendees"] == 12 and type(values["Attendees"]) is int


def test_field_object_attributes(fields: list[F.Field]) -> None:
    field = fields[0]
    assert (field.label, field.key, field.type, field.options) == ("Event name", KEY_NAME, "String", None)
    assert field.value_json == '"Event Test"'
    assert field.is_readonly is False and field.is_required is False
    assert field.param_key == "field_9aae87b4_2b01_43eb_be17_d0080a225f54"
    assert fields[5].options == ["Open", "Closed"]
    assert fields[6].is_readonly is True


@pytest.mark.parametrize(
    ("type_name", "value_json", "expected"),
    [
        ("String", '"x"', "x"),
        ("Boolean", "false", False),
        ("Decimal", "0.1", Decimal("0.1")),
        ("Decimal", "12345678901234567890.123456789", Decimal("12345678901234567890.123456789")),
        ("Int64", "9007199254740993", 9007199254740993),
        ("DateTime", '"2021-08-24T23:00:00+02:00"', dt.datetime(2021, 8, 24, 21, tzinfo=dt.UTC)),
        ("DateTime", '"2021-08-24T21:00:00"', dt.datetime(2021, 8, 24, 21, tzinfo=dt.UTC)),
        ("Decimal?", "null", None),
        ("String?", "", None),
        ("Mystery", '{"a": [1, "b"]}', {"a": [1, "b"]}),
    ],
)
def test_parse_value_json_by_type(type_name: str, value_json: str, expected: object) -> None:
    value = F.parse_value_json(value_json, type_name)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, dt.datetime):
        assert value.tzinfo is not None and value.utcoffset() is not None


def test_decimal_never_goes_through_float() -> None:
    # 0.1 + 0.2 through float would be 0.30000000000000004
    value = F.parse_value_json("0.30000000000000000000001", "Decimal")
    assert value == Decimal("0.30000000000000000000001")


@pytest.mark.parametrize(
    ("type_name", "value_json", "reason"),
    [
        ("Decimal", "{not json", "not valid JSON"),
        ("Boolean", '"maybe"', "does not fit its type 'Boolean'"),
        ("DateTime", '"yesterday"', "does not fit its type 'DateTime'"),
        ("Int32", "1.5", "does not fit its type 'Int32'"),
        ("Decimal", "NaN", "not valid JSON"),
    ],
)
def test_malformed_value_json_names_field_and_instance(type_name: str, value_json: str, reason: str) -> None:
    with pytest.raises(WorkflowsoftResponseError) as info:
        F.parse_fields([{"label": "Event start", "type": type_name, "key": KEY_START, "valueJson": value_json}],
                       instance_id=77)
    message = str(info.value)
    assert "'Event start'" in message
    assert "integration instance 77" in message
    assert reason in message


def test_name_resolution_by_label_key_and_param_key(fields: list[F.Field]) -> None:
    assert F.resolve_field("Event name", fields) is fields[0]
    assert F.resolve_field("event NAME", fields) is fields[0]
    assert F.resolve_field(KEY_EXISTS, fields) is fields[1]
    assert F.resolve_field("field_" + KEY_DURATION.replace("-", "_"), fields) is fields[3]
    assert F.resolve_field("nothing", fields) is None


def test_prepare_update_converts_every_type(fields: list[F.Field]) -> None:
    body = F.prepare_update(
        fields,
        {
            "Event name": "New",
            KEY_EXISTS: False,
            "Event start": dt.datetime(2021, 8, 25, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "field_" + KEY_DURATION.replace("-", "_"): Decimal("1640.10"),
            "Attendees": "13",
            "Status": "Closed",
        },
    )
    assert body == {
        "field_9aae87b4_2b01_43eb_be17_d0080a225f54": "New",
        "field_3db9d864_d2ea_43f5_8907_2a350c5708d5": False,
        "field_cdb815a3_0c60_4cd6_88b2_ef3f9becddc7": "2021-08-24T23:30:00Z",
        "field_4dc8a917_da0c_4cf7_a43e_064785e42785": Decimal("1640.10"),
        "field_" + KEY_COUNT.replace("-", "_"): 13,
        "field_aaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee": "Closed",
    }
    assert str(body["field_4dc8a917_da0c_4cf7_a43e_064785e42785"]) == "1640.10"


def test_nullable_allows_none_and_non_nullable_refuses(fields: list[F.Field]) -> None:
    assert F.prepare_update(fields, {"Event duration": None}) == {"field_" + KEY_DURATION.replace("-", "_"): None}
    with pytest.raises(WorkflowsoftValidationError, match="does not allow an empty value"):
        F.prepare_update(fields, {"Status": None})


def test_one_error_lists_every_problem(fields: list[F.Field]) -> None:
    with pytest.raises(WorkflowsoftValidationError) as info:
        F.prepare_update(
            fields,
            {
                "Evnt name": "x",  # unknown, close to "Event name"
                "Locked": "y",  # read-only
                "Event exists": "perhaps",  # wrong type
                "Status": "Pending",  # outside the options
                "Event start": dt.datetime(2021, 1, 1),  # naive
                "Attendees": 1.5,  # not whole
            },
            instance_id=42,
        )
    error = info.value
    assert isinstance(error, WorkflowsoftInputError)  # fails the task without retries
    assert len(error.problems) == 6
    message = str(error)
    assert "6 problem(s)" in message and "integration instance 42" in message and "nothing was sent" in message
    assert "did you mean 'Event name'?" in message
    assert "Known labels: 'Event name', 'Event exists'" in message
    assert "'Locked': the field is read-only" in message
    assert "'perhaps'" in message and "is not a boolean" in message
    assert "'Pending' is not one of the options ['Open', 'Closed']" in message
    assert "has no time zone" in message
    assert "not a whole number" in message


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("Event name", 5),
        ("Event exists", 1),
        ("Event start", "not a date"),
        ("Event start", 1629838800),
        ("Event duration", "abc"),
        ("Event duration", True),
        ("Event duration", float("nan")),
        ("Attendees", True),
        ("Attendees", "twelve"),
    ],
)
def test_wrong_type_is_refused(fields: list[F.Field], label: str, value: object) -> None:
    with pytest.raises(WorkflowsoftValidationError) as info:
        F.prepare_update(fields, {label: value})
    assert f"{label!r}" in str(info.value)
    assert "refused" in str(info.value)


def test_same_field_twice_is_refused(fields: list[F.Field]) -> None:
    with pytest.raises(WorkflowsoftValidationError, match="the same field as 'Event name'"):
        F.prepare_update(fields, {"Event name": "a", KEY_NAME: "b"})


def test_empty_required() -> None:
    data = page_fields()
    data[0]["isRequired"] = True
    data[0]["valueJson"] = '""'
    data[3]["isRequired"] = True
    data[3]["valueJson"] = "null"
    parsed = F.parse_fields(data)
    assert F.empty_required(parsed) == ["Event name", "Event duration"]
    assert F.empty_required(parsed, {parsed[0].param_key: "filled"}) == ["Event duration"]


def test_to_jsonable_is_exact() -> None:
    value = {"d": Decimal("1.10"), "t": dt.datetime(2021, 8, 24, 21, tzinfo=dt.UTC), "l": (1, 2)}
    assert F.to_jsonable(value) == {"d": "1.10", "t": "2021-08-24T21:00:00Z", "l": [1, 2]}


def test_unknown_type_value_is_written_back_unchanged() -> None:
    field = F.parse_field({"label": "Blob", "type": "Json", "key": KEY_NAME, "valueJson": '{"a": 1.5, "b": [2.25]}'})
    wire = F.to_wire(field.value, field)
    from airflow_provider_workflowsoft.api.protocol import dumps_body

    assert dumps_body(wire) == '{"a":1.5,"b":[2.25]}'


def test_duplicate_labels_stay_distinct() -> None:
    data = page_fields()[:2]
    data[1]["label"] = "Event name"
    data[1]["type"] = "String"
    data[1]["valueJson"] = '"second"'
    values = F.field_values(F.parse_fields(data))
    assert values == {"Event name": "Event Test", f"Event name ({KEY_EXISTS})": "second"}
