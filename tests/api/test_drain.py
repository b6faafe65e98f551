"""The drain rules shared by every poller of a step: limit, empty, repeated, skip, re-offered claims."""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft.api.drain import Drain


def ids(instances: list[dict[str, Any]]) -> list[int]:
    return [i["IntegrationInstanceId"] for i in instances]


# -- drain rules --------------------------------------------------------------------------------------


def test_drain_stops_at_limit_empty_repeat_and_skip() -> None:
    drain = Drain(2)
    assert drain.offer({"IntegrationInstanceId": 1}) and drain.offer({"IntegrationInstanceId": 2})
    assert drain.finished and drain.reason == "limit"
    drain = Drain(5)
    drain.offer({"IntegrationInstanceId": 1})
    assert not drain.offer(None) and drain.reason == "empty"
    drain = Drain(5)
    drain.offer({"IntegrationInstanceId": 1})
    assert not drain.offer({"IntegrationInstanceId": "1"}) and drain.reason == "repeated"
    assert ids(drain.instances) == [1]
    drain = Drain(5, skip=[7])
    assert not drain.offer({"IntegrationInstanceId": 7}) and drain.finished and drain.instances == []
    drain = Drain(2, taken=[{"IntegrationInstanceId": 3}, {"IntegrationInstanceId": 4}])
    assert drain.finished  # re-offered claims count in the limit
