"""Apache Airflow provider for Workflowsoft.

Hook, sensor, deferrable trigger and operators for integration steps, processes and tasks, plus a local emulator of the
Workflowsoft API.

Layers, each importing only the ones before it (see ``docs/architecture.md``):
``api`` (the Workflowsoft API, no Airflow) <- ``records`` (durable claims and create records) <- ``hooks``
<- ``operators``, ``sensors``, ``triggers``, ``notifications``, ``decorators``. ``emulator`` imports nothing
from the package.
"""

__version__ = "0.5.0.dev0"
