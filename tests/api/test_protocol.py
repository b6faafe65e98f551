"""The sans-IO protocol: request builders, answer parsing, retry policy, token cache."""

from __future__ import annotations

import email.utils
import time
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_workflowsoft.api import protocol as P
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError, WorkflowsoftResponseError
from tests.conftest import KEY_NAME, FakeClock


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, "https://api.workflowsoft.com"),
        ("", None, "https://api.workflowsoft.com"),
        ("api.example.com", None, "https://api.example.com"),
        ("api.example.com/", None, "https://api.example.com"),
        ("http://localhost:8080/", None, "http://localhost:8080"),
        ("localhost", 8080, "https://localhost:8080"),
        ("https://api.example.com", 443, "https://api.example.com"),
    ],
)
def test_normalise_base_url(host: str | None, port: int | None, expected: str) -> None:
    assert P.normalise_base_url(host, port) == expected


def test_calls_match_the_page() -> None:
    assert P.call_list_process_diagrams("Ev", 100) == P.Call(
        "GET", "/api/v2/workflows", {"mode": "view", "limit": 100, "searchTerm": "Ev"}
    )
    assert "searchTerm" not in P.call_list_process_diagrams(None, 100).params
    assert P.call_list_integration_steps(5).path == "/api/v2/workflows/5/tasks"
    assert P.call_list_integration_steps("5").params == {"integration": "true"}
    assert P.call_poll_new_integration(7).params == {"id": 7}
    assert P.call_get_fields(42).path == "/api/v2/workflows/instances/tasks/42/variables"
    update = P.call_update_fields(42, {"field_x": 1}, "system")
    assert (update.method, update.path, update.body) == (
        "POST", "/api/v2/workflows/instances/variables", {"TaskId": 42, "Fields": {"field_x": 1}}
    )
    assert update.headers() == {
        "Accept": "application/json", "Content-Type": "application/json", "X-OnBehalfOf-Id": "system"
    }
    complete = P.call_complete_step("42", "system")
    assert (complete.method, complete.path, complete.body) == (
        "PATCH", "/api/v2/tasks/42/action", {"Action": "Complete", "CustomAction": "__AUTO__"}
    )
    assert P.call_search_users("john", 15).params == {"Query": "john", "entityType": "users", "limit": 15}
    start = P.call_start_process(3, None, "9")
    assert start.body == {"TemplateId": 3, "Fields": {}} and start.creates
    task = P.call_create_task("T", 9, "D", None, "system")
    assert task.body == {"Title": "T", "AssignedUserId": 9, "Description": "D"} and task.creates
    assert P.call_mint_token(3600).params == {"lifeTimeInSec": 3600}
    assert P.call_get_fields(1).headers() == {"Accept": "application/json"}


@pytest.mark.parametrize("bad", ["abc", "1.5", "", None, True, 1.0, "-3", "12; DROP"])
def test_non_numeric_ids_are_refused(bad: object) -> None:
    with pytest.raises(WorkflowsoftInputError, match="integration_instance_id must be an integer id") as info:
        P.call_get_fields(bad)
    assert repr(bad) in str(info.value)


def test_create_task_refuses_bad_input_listing_every_problem() -> None:
    with pytest.raises(WorkflowsoftInputError) as info:
        P.call_create_task("  ", None, 5, "file.txt", "system")  # type: ignore[arg-type]
    message = str(info.value)
    assert "title" in message and "description" in message and "files" in message
    assert "nothing was sent" in message


def test_process_fields_uuid_keys_become_param_keys() -> None:
    out = P.process_fields({KEY_NAME: "x", "Other": Decimal("1.50")})
    assert out == {"field_9aae87b4_2b01_43eb_be17_d0080a225f54": "x", "Other": Decimal("1.50")}


def test_dumps_body_keeps_decimal_digits() -> None:
    text = P.dumps_body({"a": Decimal("1640.10"), "b": [Decimal("0.1000000000000000000001")], "s": "é"})
    assert text == '{"a":1640.10,"b":[0.1000000000000000000001],"s":"é"}'
    with pytest.raises(WorkflowsoftInputError, match="not a finite number"):
        P.dumps_body({"a": Decimal("NaN")})


def test_decode_json() -> None:
    assert P.decode_json("", "application/json", "GET", "/p") is None
    assert P.decode_json('{"a": 1.5}', "application/json", "GET", "/p") == {"a": Decimal("1.5")}
    with pytest.raises(WorkflowsoftResponseError, match=r"GET /p with an HTML page instead of JSON: 'Oops'"):
        P.decode_json("<html><title>Oops</title></html>", "text/html", "GET", "/p")
    with pytest.raises(WorkflowsoftResponseError, match=r"GET /p with a body that is not JSON: '\{trunc'"):
        P.decode_json("{trunc", "application/json", "GET", "/p")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"Message": "Bad id"}', "Bad id"),
        ('{"message": "bad"}', "bad"),
        ('{"error": "nope"}', "nope"),
        ("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head></html>", "502 Bad Gateway"),
        ("plain failure text", "plain failure text"),
        ("x" * 1000, "x" * 297 + "..."),
        ("", ""),
    ],
)
def test_extract_message(text: str, expected: str) -> None:
    assert P.extract_message(text) == expected


@pytest.mark.parametrize(
    "text",
    ['"abc.def"', '{"token": "abc.def"}', '{"Access_Token": "abc.def"}', '{"APITOKEN": "abc.def"}',
     '{"data": {"token": "abc.def"}}', "abc.def", "  abc.def\n"],
)
def test_parse_token_shapes(text: str) -> None:
    assert P.parse_token(text) == "abc.def"


def test_parse_token_plain_digits() -> None:
    assert P.parse_token("1234567890") == "1234567890"


@pytest.mark.parametrize(("text", "reason"), [("", "empty body"), ("<html></html>", "HTML page"),
                                              ('{"foo": 1}', "holds no token")])
def test_parse_token_refuses(text: str, reason: str) -> None:
    with pytest.raises(WorkflowsoftResponseError, match=reason):
        P.parse_token(text)


@pytest.mark.parametrize(
    "data",
    [None, {}, [], {"IntegrationInstanceId": None, "ProcessInstanceId": None}, {"IntegrationInstanceId": 0},
     [{"IntegrationInstanceId": None}]],
)
def test_normalise_poll_nothing_new(data: object) -> None:
    assert P.normalise_poll(data) is None


def test_normalise_poll_instance() -> None:
    assert P.normalise_poll({"IntegrationInstanceId": 2, "ProcessInstanceId": "3"}) == {
        "IntegrationInstanceId": 2, "ProcessInstanceId": 3
    }
    assert P.normalise_poll([{"integrationInstanceId": 5, "processInstanceId": 6}]) == {
        "IntegrationInstanceId": 5, "ProcessInstanceId": 6
    }


def test_retry_policy_decisions() -> None:
    policy = P.RetryPolicy()
    read = P.call_get_fields(1)
    create = P.call_start_process(1, None, "system")
    for status in (429, 500, 502, 503, 504):
        assert policy.should_retry(read, status=status)
    for status in (400, 401, 403, 404, 409, 422):
        assert not policy.should_retry(read, status=status)
        assert not policy.should_retry(create, status=status)
    assert policy.should_retry(create, status=429) and policy.should_retry(create, status=503)
    assert not policy.should_retry(create, status=500) and not policy.should_retry(create, status=504)
    assert policy.should_retry(create, failure=P.NOT_SENT)
    assert not policy.should_retry(create, failure=P.MAYBE_SENT)
    assert policy.should_retry(read, failure=P.MAYBE_SENT)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = P.RetryPolicy(backoff_base=0.5, backoff_max=4.0, retry_after_max=60.0)
    low = [policy.delay(n, rand=lambda: 0.0) for n in range(1, 7)]
    high = [policy.delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert low == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.delay(1, "7") == 7.0
    assert policy.delay(1, "3600") == 60.0
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 5 <= policy.delay(1, date) <= 10.5
    assert policy.delay(1, "garbage", rand=lambda: 0.0) == 0.25


def test_token_cache_renews_before_expiry() -> None:
    clock = FakeClock(100.0)
    cache = P.TokenCache(clock=clock)
    key = P.TokenCache.key("https://x", "admin", "pw", 3600)
    assert "pw" not in repr(key)
    cache.put(key, "t1", minted_at=100.0)
    clock.now = 100.0 + 3600 - 61
    assert cache.get(key) == "t1"
    clock.now = 100.0 + 3600 - 59  # inside the 60 s margin
    assert cache.get(key) is None
    short = P.TokenCache.key("https://x", "admin", "pw", 100)
    cache.put(short, "t2", minted_at=0.0)
    clock.now = 89.0
    assert cache.get(short) == "t2"
    clock.now = 91.0  # margin of 10 % of 100 s
    assert cache.get(short) is None
    cache.discard(short, "other")
    cache.clear()
    assert cache.get(key) is None


@pytest.mark.parametrize(("value", "expected"), [("True", True), (" yes ", True), ("on", True), ("1", True), (1, True),
                                                 ("false", False), ("0", False), ("", False), (None, False),
                                                 ("nope", False), (0, False)])
def test_one_reading_of_templated_booleans(value: object, expected: bool) -> None:
    assert P.to_bool(value) is expected


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (" ON ", True), ("yes", True), (1, True),
                                                 ("Off", False), ("no", False), ("0", False), (0, False)])
def test_a_strict_boolean_reads_the_same_texts(value: object, expected: bool) -> None:
    assert P.to_bool(value, strict=True) is expected


@pytest.mark.parametrize("value", ["perhaps", "", 2, None, "truthy"])
def test_a_strict_boolean_refuses_what_is_neither_true_nor_false(value: object) -> None:
    with pytest.raises(WorkflowsoftInputError, match=r"verify_ssl is .*, which is neither true \(1, on, true, yes\) "
                                                     r"nor false \(0, false, no, off\)"):
        P.to_bool(value, strict=True, name="verify_ssl")


@pytest.mark.parametrize(("given", "expected"), [
    (None, []), ("[]", []), (5001, [5001]), ("5001", [5001]), ("5001, 5002,", [5001, 5002]),
    ([5001, "5002", 5001], [5001, 5002, 5001]), ((5001,), [5001]), ({5001}, [5001]),
    ({"IntegrationInstanceId": 5001}, [5001]), ([{"integration_instance_id": "5001"}, {"integrationInstanceId": 5002}],
                                                [5001, 5002]),
    ('{"IntegrationInstanceId": 5001, "ProcessInstanceId": 91}', [5001]), ('[5001, {"IntegrationInstanceId": 5002}]',
                                                                           [5001, 5002]),
    (['{"IntegrationInstanceId": 5001, "ProcessInstanceId": 91}'], [5001]),
])
def test_given_instances_reads_every_shape_of_a_list_of_instances(given: Any, expected: list[int]) -> None:
    assert [iid for iid, _ in P.given_instances(given, "instance_ids")] == expected


def test_given_instances_hands_back_each_instance_dict_even_from_its_json_text() -> None:
    given = ['{"IntegrationInstanceId": 5001, "ProcessInstanceId": 91}', 5002]
    assert P.given_instances(given, "instances") == [(5001, {"IntegrationInstanceId": 5001, "ProcessInstanceId": 91}),
                                                     (5002, 5002)]


@pytest.mark.parametrize(("given", "reason"), [
    ("[5001,", r"instance_ids: '\[5001,' is refused: it is not valid JSON"),
    ("5001, x", r"instance_ids: ' x' \(item 2\) is refused: integration_instance_id must be an integer id"),
    ([5001, 0], r"instance_ids: 0 \(item 2\) is refused: integration_instance_id must be an integer id of 1 or more"),
    ("", r"instance_ids: '' is refused: it is blank \(give None for no instances\)"),
    (" ", r"instance_ids: ' ' is refused: it is blank"),
    ({"Id": 5001}, r"instance_ids: \{'Id': \.\.\.\} is refused: .*an instance dict with 'IntegrationInstanceId'"),
    (True, r"instance_ids: True is refused"), (5.5, r"instance_ids: 5.5 is refused: give integration instances"),
])
def test_given_instances_refuses_naming_the_argument_the_value_and_why(given: Any, reason: str) -> None:
    with pytest.raises(WorkflowsoftInputError, match=reason):
        P.given_instances(given, "instance_ids")


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("", True), ("  ", True), ("x", False), (0, False)])
def test_blank_means_none_or_whitespace(value: object, expected: bool) -> None:
    assert P.blank(value) is expected


def test_one_parser_per_id_rule() -> None:
    from airflow_provider_workflowsoft.api.drain import Drain
    from airflow_provider_workflowsoft.operators import workflowsoft as operators

    # A user's instance id: an int, a numeric string, an instance dict (or its JSON text); refused otherwise.
    assert operators.coerce_instance_id is P.coerce_instance_id
    for given in (5001, " 5001 ", {"integration_instance_id": "5001"}, '{"IntegrationInstanceId": 5001}'):
        assert P.coerce_instance_id(given) == 5001
    for bad in (0, -3, True, "x", {"Id": 5001}, "{not json"):
        with pytest.raises(WorkflowsoftInputError, match="integration_instance_id must be an integer id"):
            P.coerce_instance_id(bad)
    # An id as an answer or a record holds it: read leniently, never refused.
    assert [P.id_value(v) for v in (" 7 ", Decimal("7"), 7, True, None, "seven")] == [7, 7, 7, True, None,
                                                                                            "seven"]
    assert P.instance_key({"IntegrationInstanceId": Decimal("7")}) == P.instance_key("7") == 7
    # The drain keys instances by that rule: the same instance as a string id and as a dict is one instance.
    drain = Drain(5, skip=["7"])
    assert not drain.offer({"IntegrationInstanceId": Decimal("7"), "ProcessInstanceId": 1})
    assert drain.reason == "held elsewhere"


@pytest.mark.parametrize(("given", "expected"), [
    (1001, 1001), ("1001", 1001), ({"Id": 1001, "Title": "Purchase approval #1001"}, 1001),
    ('{"Id": 1001, "Title": "x"}', 1001), ("{'Id': 1001, 'Title': 'x'}", 1001),  # rendered templates
    ([{"IntegrationInstanceId": 5001, "ProcessInstanceId": "1001"}], 1001), ({"ProcessInstanceId": 7, "Id": 9}, 7),
])
def test_coerce_process_instance_id_reads_what_a_dag_hands_it(given: Any, expected: int) -> None:
    assert P.coerce_process_instance_id(given) == expected


@pytest.mark.parametrize("bad", [None, "", "abc", 0, -1, True, {"Title": "x"}, "[1, 2]", "{not python", [1, 2]])
def test_coerce_process_instance_id_refuses_naming_the_field(bad: Any) -> None:
    with pytest.raises(WorkflowsoftInputError, match=r"process_instance_id must be .* got "):
        P.coerce_process_instance_id(bad)
