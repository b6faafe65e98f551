"""Which integration step: its id, or the names of its process diagram and of the step.

One check ("a step id, or both names") and one way to resolve it to an id, for the sensor, the batch worker, the
trigger and the assets. Templated arguments are checked when the task is built (a template is a non-blank string)
and again, rendered, when it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.protocol import blank, coerce_id


@dataclasses.dataclass(frozen=True)
class StepRef:
    """An integration step, named by ``integration_step_id`` or by ``process_diagram_name`` + ``integration_step_name``.

    Building one refuses the arguments when neither is given, with an error naming them and their values.
    """

    integration_step_id: Any = None
    process_diagram_name: Any = None
    integration_step_name: Any = None

    def __post_init__(self) -> None:
        if self.by_name or not blank(self.integration_step_id):
            return
        raise WorkflowsoftInputError(
            "Say which integration step: integration_step_id, or process_diagram_name and integration_step_name "
            f"(got integration_step_id={self.integration_step_id!r}, "
            f"process_diagram_name={self.process_diagram_name!r}, "
            f"integration_step_name={self.integration_step_name!r})"
        )

    @classmethod
    def given(cls, integration_step_id: Any, process_diagram_name: Any, integration_step_name: Any) -> bool:
        """Tell whether the arguments name a step at all (the batch worker may be given instances instead)."""
        return not blank(integration_step_id) or (
            not blank(process_diagram_name) and not blank(integration_step_name))

    @property
    def by_name(self) -> bool:
        """Tell whether the step is looked up by names (no id given)."""
        return blank(self.integration_step_id) and not blank(self.process_diagram_name) and not blank(
            self.integration_step_name)

    def step_id(self) -> int | None:
        """Return the given id (an int or a numeric string), or ``None`` when the step is named."""
        if self.by_name:
            return None
        if isinstance(self.integration_step_id, Mapping):  # an instance dict names an instance, not a step
            raise WorkflowsoftInputError(f"integration_step_id must be an integer id, got {self.integration_step_id!r}")
        return int(coerce_id(self.integration_step_id, "integration_step_id"))

    def describe(self) -> str:
        """Return the step as a log line names it: its id, or its names."""
        if self.by_name:
            return f"{self.integration_step_name!r} of {self.process_diagram_name!r}"
        return str(self.integration_step_id)

    def resolve(self, client: Any) -> int:
        """Return the step's id, looked up with the sync client when named (case-insensitive, one match each)."""
        step_id = self.step_id()
        if step_id is not None:
            return step_id
        diagram = client.find_process_diagram(str(self.process_diagram_name))
        return int(client.find_integration_step(diagram["Id"], str(self.integration_step_name))["Id"])

    async def resolve_async(self, client: Any) -> int:
        """Return the step's id, looked up with the async client when named (the sync client's rule)."""
        step_id = self.step_id()
        if step_id is not None:
            return step_id
        return int(await client.find_integration_step_id(str(self.process_diagram_name),
                                                         str(self.integration_step_name)))


__all__ = ["StepRef"]
