"""Local emulator of the Workflowsoft REST API, for tests, demos and offline development.

Standard library only (PyYAML is used for ``.yaml`` scenarios when installed); it imports nothing
from Airflow or from the rest of this package, so it can run anywhere::

    from airflow_provider_workflowsoft.emulator import EmulatorServer

    with EmulatorServer() as emulator:          # built-in demo scenario, free port
        emulator.create_instances(11, count=2)
        print(emulator.base_url, emulator.static_token)

or from a shell: ``python -m airflow_provider_workflowsoft.emulator --port 8765``.
"""

from .scenario import DEMO_SCENARIO_PATH, Scenario, ScenarioError, load_scenario
from .server import EmulatorServer
from .state import ApiError, EmulatorState, FaultConfig, Settings

__all__ = [
    "DEMO_SCENARIO_PATH",
    "ApiError",
    "EmulatorServer",
    "EmulatorState",
    "FaultConfig",
    "Scenario",
    "ScenarioError",
    "Settings",
    "load_scenario",
]
