"""Local to the emulator tests: the scenario's field keys and a thin raw-HTTP ``Api`` wrapper around the
shared ``emulator`` fixture (``tests/conftest.py``: a fresh emulator on a free loopback port per test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_workflowsoft.emulator import EmulatorServer

EVENT_STEP = 11
CRM_STEP = 21
KEYS = {
    "Event name": "9aae87b4-2b01-43eb-be17-d0080a225f54",
    "Event exists": "3db9d864-d2ea-43f5-8907-2a350c5708d5",
    "Event start": "cdb815a3-0c60-4cd6-88b2-ef3f9becddc7",
    "Event duration": "4dc8a917-da0c-4cf7-a43e-064785e42785",
    "Category": "68031b46-30c9-4d7d-a0f1-00c787e859d4",
    "Venue code": "68324e9b-332f-4c36-b71a-c194fe762465",
    "Attendees": "feef4b1d-0976-4888-a998-7b56250078c7",
    "Customer": "e75a577b-e234-4426-b351-bd261698e07a",
    "Status": "fc7a1baa-4397-41dc-9169-9f815f1fb417",
}


def field_name(label: str) -> str:
    return "field_" + KEYS[label].replace("-", "_")


class Api:
    """Thin requests wrapper: base URL, static bearer token and the common headers."""

    def __init__(self, base_url: str, token: str = "demo-token") -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.token = token

    def request(self, method: str, path: str, *, token: str | None = "default", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        use = self.token if token == "default" else token
        if use is not None:
            headers.setdefault("Authorization", f"Bearer {use}")
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base_url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def poll(self, step_id: int = EVENT_STEP) -> requests.Response:
        return self.get("/api/v2/workflows/instances/new-integrations", params={"id": step_id})

    def variables(self, instance_id: int) -> dict[str, Any]:
        resp = self.get(f"/api/v2/workflows/instances/tasks/{instance_id}/variables")
        assert resp.status_code == 200, resp.text
        return {f["label"]: f for f in resp.json()}

    def update(self, instance_id: Any, fields: dict[str, Any], on_behalf: str | None = "system") -> requests.Response:
        headers = {"X-OnBehalfOf-Id": on_behalf} if on_behalf is not None else {}
        return self.post(
            "/api/v2/workflows/instances/variables",
            json={"TaskId": instance_id, "Fields": fields},
            headers=headers,
        )

    def complete(self, instance_id: int, on_behalf: str | None = "system", body: Any = None) -> requests.Response:
        headers = {"X-OnBehalfOf-Id": on_behalf} if on_behalf is not None else {}
        payload = body if body is not None else {"Action": "Complete", "CustomAction": "__AUTO__"}
        return self.patch(f"/api/v2/tasks/{instance_id}/action", json=payload, headers=headers)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request(method, "/_emulator/" + path, token=None, **kwargs)


@pytest.fixture
def api(emulator: EmulatorServer) -> Iterator[Api]:
    client = Api(emulator.base_url)
    yield client
    client.session.close()
