"""``WorkflowsoftIntegrationTrigger``: waits in the triggerer for new integration instances.

The trigger polls ``new-integrations`` with the async client until it gets at least one instance,
drains up to ``max_instances`` in one go (the same stop rules as the sensor: see :class:`Drain`),
optionally reads each instance's fields, and fires one ``TriggerEvent``. Transient faults (network,
429, 5xx after the client's own retries) are ridden out with backoff; an error event is fired only
after ``max_consecutive_failures`` failed rounds in a row, or at once for errors that cannot heal
(refused credentials, unknown integration step).

Instances already received are never dropped: when polling or reading fields fails after some were
received, the event carries them (without fields; the sensor reads those itself).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.drain import Drain
from airflow_provider_workflowsoft.api.errors import WorkflowsoftError, WorkflowsoftInputError
from airflow_provider_workflowsoft.api.fields import to_jsonable

log = logging.getLogger(__name__)

CLASSPATH = "airflow_provider_workflowsoft.triggers.workflowsoft.WorkflowsoftIntegrationTrigger"


class WorkflowsoftIntegrationTrigger(BaseTrigger):
    """Fires when new integration instances of an integration step are available.

    Event payloads: ``{"status": "success", "instances": [{"IntegrationInstanceId", "ProcessInstanceId",
    "fields"?}, ...]}`` or ``{"status": "error", "message": ..., "instances": [...]}``.

    .. code-block:: python

        trigger = WorkflowsoftIntegrationTrigger(integration_step_id=11, max_instances=10, poll_interval=30)

    :param workflowsoft_conn_id: the Workflowsoft connection id (``conn_id``, its 0.1 name, still works)
    :param integration_step_id: the integration step (``IntegrationDiagramID`` in the API) to poll
        (``integration_diagram_id``, its 0.1 name, still works)
    :param max_instances: the most instances one event carries
    :param fetch_fields: also read each instance's fields (``{label: value}``, JSON-safe)
    :param poll_interval: seconds between polls when nothing is new
    :param max_consecutive_failures: failed rounds in a row before an error event
    :param skip_ids: instance ids another run is working on: polled again, they count as "nothing new"
    :param client_options: :class:`~airflow_provider_workflowsoft.api.client.ClientConfig` fields that win over
        the connection (JSON-safe values)
    :param failure_backoff_max: the longest wait, in seconds, between failed rounds
    """

    def __init__(
        self,
        integration_step_id: int | None = None,
        workflowsoft_conn_id: str = defaults.DEFAULT_CONN_ID,
        max_instances: int = 1,
        fetch_fields: bool = False,
        poll_interval: float = 60.0,
        max_consecutive_failures: int = 5,
        skip_ids: list[Any] | None = None,
        client_options: dict[str, Any] | None = None,
        failure_backoff_max: float = 300.0,
        conn_id: str | None = None,
        integration_diagram_id: int | None = None,
    ) -> None:
        super().__init__()
        for old, new in (("conn_id", "workflowsoft_conn_id"), ("integration_diagram_id", "integration_step_id")):
            if locals()[old] is not None:
                warnings.warn(f"WorkflowsoftIntegrationTrigger({old}=...) is deprecated: use {new}",
                              DeprecationWarning, stacklevel=2)
        self.workflowsoft_conn_id = conn_id if conn_id is not None else workflowsoft_conn_id
        step = integration_step_id if integration_step_id is not None else integration_diagram_id
        if step is None:
            raise TypeError("WorkflowsoftIntegrationTrigger needs integration_step_id")
        self.integration_step_id = step
        self.max_instances = int(max_instances)
        self.fetch_fields = bool(fetch_fields)
        self.poll_interval = float(poll_interval)
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self.skip_ids = list(skip_ids or [])
        self.client_options = dict(client_options or {})
        self.failure_backoff_max = float(failure_backoff_max)
        #: built by ``run()``; tests replace it to inject a transport
        self.client_factory: Callable[[Any], Any] | None = None
        self.sleep: Callable[[float], Any] = asyncio.sleep

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "integration_step_id": self.integration_step_id,
                "workflowsoft_conn_id": self.workflowsoft_conn_id,
                "max_instances": self.max_instances,
                "fetch_fields": self.fetch_fields,
                "poll_interval": self.poll_interval,
                "max_consecutive_failures": self.max_consecutive_failures,
                "skip_ids": list(self.skip_ids),
                "client_options": dict(self.client_options),
                "failure_backoff_max": self.failure_backoff_max,
            },
        )

    @property
    def integration_diagram_id(self) -> int:
        """The 0.1 name of :attr:`integration_step_id`."""
        return self.integration_step_id

    @property
    def conn_id(self) -> str:
        """The 0.1 name of :attr:`workflowsoft_conn_id`."""
        return self.workflowsoft_conn_id

    async def _client(self) -> Any:
        from airflow_provider_workflowsoft.hooks.workflowsoft import WorkflowsoftHook

        hook = WorkflowsoftHook(self.workflowsoft_conn_id, client_options=self.client_options)
        if self.client_factory is not None:  # tests inject a transport
            from airflow_provider_workflowsoft.hooks.workflowsoft import config_from_connection
            from airflow_provider_workflowsoft.version_compat import aconnection_extras, aget_connection

            conn = await aget_connection(self.workflowsoft_conn_id)
            return self.client_factory(
                config_from_connection(conn, extras=await aconnection_extras(conn), **self.client_options)
            )
        return await hook.get_async_client()

    def _failure_wait(self, failures: int) -> float:
        return min(self.failure_backoff_max, max(self.poll_interval, 1.0) * (2 ** (failures - 1)))

    async def run(self) -> AsyncIterator[TriggerEvent]:  # type: ignore[override]
        received: list[dict[str, Any]] = []  # kept across failed rounds: never drop a handed-out instance
        failures = 0
        client = None
        try:
            while True:
                try:
                    if client is None:
                        client = await self._client()
                    drain = Drain(self.max_instances, taken=received, skip=self.skip_ids)
                    while not drain.finished:
                        if drain.offer(await client.poll_new_integration(self.integration_step_id)):
                            received = drain.instances
                    if self.fetch_fields:
                        for instance in received:
                            if "fields" not in instance:
                                values = await client.get_field_values(instance["IntegrationInstanceId"])
                                instance["fields"] = to_jsonable(values)
                    failures = 0
                except WorkflowsoftInputError as exc:
                    # Cannot heal by waiting (credentials refused, unknown step, bad connection).
                    yield TriggerEvent(self._error(str(exc), received))
                    return
                except (TimeoutError, WorkflowsoftError, OSError) as exc:
                    failures += 1
                    if received:
                        log.warning("Reading new integration instances failed (%s); handing over the %d received",
                                    exc, len(received))
                        yield TriggerEvent({"status": "success", "instances": received, "warning": str(exc)})
                        return
                    if failures >= self.max_consecutive_failures:
                        yield TriggerEvent(self._error(
                            f"Polling integration step {self.integration_step_id} failed "
                            f"{failures} times in a row; last error: {exc}", received))
                        return
                    wait = self._failure_wait(failures)
                    log.warning("Polling integration step %s failed (%s); attempt %d/%d, next in %.1f s",
                                self.integration_step_id, exc, failures, self.max_consecutive_failures, wait)
                    await self.sleep(wait)
                    continue
                if received:
                    log.info("Received %d integration instance(s) of step %s: %s", len(received),
                             self.integration_step_id, [i["IntegrationInstanceId"] for i in received])
                    yield TriggerEvent({"status": "success", "instances": received})
                    return
                await self.sleep(self.poll_interval)
        finally:
            if client is not None:
                await client.aclose()

    def _error(self, message: str, received: list[dict[str, Any]]) -> dict[str, Any]:
        return {"status": "error", "message": message, "instances": received}


__all__ = ["Drain", "WorkflowsoftIntegrationTrigger"]
