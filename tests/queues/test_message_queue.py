"""The ``workflowsoft`` queue provider of common.messaging: ``MessageQueueTrigger(scheme="workflowsoft")`` builds the
provider's integration-step watcher, with the same checks; a clear error without the extra or before Airflow 3.3.
The example DAG runs under a real scheduler and triggerer in tests/deployment/test_embedded.py."""

from __future__ import annotations

import importlib
import sys

import pytest

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.get_provider_info import get_provider_info
from airflow_provider_workflowsoft.version_compat import AIRFLOW_V_3_3_PLUS

PROVIDER = "airflow_provider_workflowsoft.queues.workflowsoft.WorkflowsoftMessageQueueProvider"


def test_the_provider_info_lists_the_queue_provider() -> None:
    assert get_provider_info()["queues"] == [PROVIDER]


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="asset watchers with a state store: Airflow 3.3+")
def test_message_queue_trigger_runs_the_integration_step_watcher() -> None:
    msg_queue = pytest.importorskip("airflow.providers.common.messaging.triggers.msg_queue",
                                    reason="the messaging extra")
    trigger = msg_queue.MessageQueueTrigger(scheme="workflowsoft", integration_step_id="21", max_instances=4,
                                            poll_interval=1, reclaim_after=20)
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("WorkflowsoftIntegrationEventTrigger")
    assert kwargs["integration_step_id"] == 21 and kwargs["max_instances"] == 4 and kwargs["asset_uri"] == ""
    with pytest.raises(WorkflowsoftInputError, match="reclaim_after must be longer than poll_interval"):
        msg_queue.MessageQueueTrigger(scheme="workflowsoft", integration_step_id=21, poll_interval=30,
                                      reclaim_after=20).serialize()
    with pytest.raises(WorkflowsoftInputError, match="integration_step_name"):
        msg_queue.MessageQueueTrigger(scheme="workflowsoft", process_diagram_name="Customer follow-up").serialize()


def test_before_airflow_3_1_the_provider_names_the_version_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("airflow.providers.common.messaging", reason="the messaging extra")
    queues = importlib.import_module("airflow_provider_workflowsoft.queues.workflowsoft")
    monkeypatch.setattr(queues, "AIRFLOW_V_3_1_PLUS", False)
    with pytest.raises(RuntimeError, match=r"needs Airflow 3\.1 or newer"):
        queues.WorkflowsoftMessageQueueProvider().trigger_class()


def test_without_common_messaging_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.common.messaging.providers.base_provider", None)
    monkeypatch.delitem(sys.modules, "airflow_provider_workflowsoft.queues.workflowsoft", raising=False)
    with pytest.raises(ImportError, match=r"airflow-provider-workflowsoft\[messaging\]"):
        importlib.import_module("airflow_provider_workflowsoft.queues.workflowsoft")
    monkeypatch.delitem(sys.modules, "airflow_provider_workflowsoft.queues.workflowsoft", raising=False)
