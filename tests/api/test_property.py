"""Property tests: what is written is read back equal; keys round-trip; invalid input never sends."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_workflowsoft.api import fields as F
from airflow_provider_workflowsoft.api.errors import WorkflowsoftValidationError
from airflow_provider_workflowsoft.api.protocol import dumps_body

settings.register_profile("unit", max_examples=150, deadline=None)
settings.load_profile("unit")

KEY = "9aae87b4-2b01-43eb-be17-d0080a225f54"


def field(type_name: str, options: Any = None) -> F.Field:
    return F.parse_field({"label": "F", "type": type_name, "key": KEY, "options": options, "valueJson": None})


def round_trip(value: Any, type_name: str) -> Any:
    f = field(type_name)
    wire = F.to_wire(value, f)
    text = dumps_body({"v": wire})
    value_json = text[len('{"v":'):-1]
    return F.parse_value_json(value_json, type_name, label="F", instance_id=1)


decimals = st.decimals(allow_nan=False, allow_infinity=False)
aware = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.timezones())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | decimals,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@given(st.text())
def test_string(value: str) -> None:
    assert round_trip(value, "String") == value


@given(st.booleans() | st.none())
def test_boolean(value: bool | None) -> None:
    assert round_trip(value, "Boolean?") == value


@given(st.integers())
def test_integer(value: int) -> None:
    assert round_trip(value, "Int64") == value


@given(aware)
def test_datetime(value: dt.datetime) -> None:
    back = round_trip(value, "DateTime")
    # compared as instants: aware datetimes in ambiguous DST hours never compare equal across zones
    assert back.timestamp() == value.timestamp() and back.tzinfo is not None


@given(decimals)
def test_decimal_digits_preserved(value: Decimal) -> None:
    back = round_trip(value, "Decimal")
    assert back == value
    if value != 0:  # -0 and 0 read back as the JSON integer 0
        assert back.as_tuple() == value.as_tuple() or back.normalize() == value.normalize()
    assert str(F.to_wire(value, field("Decimal"))) == str(value)


@given(decimals.filter(lambda d: d == d.to_integral_value() or d.as_tuple().exponent < 0))
def test_decimal_text_exact(value: Decimal) -> None:
    text = dumps_body({"v": F.to_wire(value, field("Decimal"))})
    assert text == '{"v":' + str(value) + "}"


@given(json_values)
def test_unknown_type_unchanged(value: Any) -> None:
    assert round_trip(value, "SomethingNew") == value


@given(st.uuids())
def test_param_key_round_trip(value: uuid.UUID) -> None:
    key = str(value)
    assert F.key_from_param(F.param_key(key)) == key
    assert F.param_key(key).startswith("field_") and "-" not in F.param_key(key)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text() | st.none() | st.floats(), min_size=1))
def test_prepare_update_never_passes_invalid_input(values: dict[str, Any]) -> None:
    fields = [field("Boolean"), F.parse_field({"label": "Locked", "type": "String", "key": "k2", "isReadonly": True})]
    valid = {"F", KEY, F.param_key(KEY), "f"}
    try:
        body = F.prepare_update(fields, values)
    except WorkflowsoftValidationError as exc:
        assert exc.problems
        return
    # only valid input may pass: every name designates the writable boolean field and every value is a bool
    assert set(values) <= valid
    assert all(isinstance(v, bool) or (isinstance(v, str) and v.lower() in ("true", "false"))
               for v in values.values())
    json.loads(dumps_body(body))


@pytest.mark.parametrize("value", [Decimal("1E+2"), Decimal("-0.000"), Decimal("123456789012345678901234567890.1")])
def test_decimal_examples(value: Decimal) -> None:
    assert round_trip(value, "Decimal") == value
