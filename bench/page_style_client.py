"""A Workflowsoft client written exactly as the vendor's help page shows it: one ``requests`` call per
snippet, a new connection each time (no session), one instance after the other.

It is the baseline of the benchmarks: what a team gets by translating the page's JavaScript snippets.
"""

from __future__ import annotations

import json
from typing import Any

import requests


def get_token(base_url: str, login: str, password: str, lifetime: int = 3600) -> str:
    # "Login to Workflowsoft as administrator, then request API token"
    response = requests.get(f"{base_url}/api/v2/app/apitoken", params={"lifeTimeInSec": lifetime},
                            auth=(login, password), timeout=30)
    response.raise_for_status()
    try:
        data = response.json()
    except ValueError:
        return response.text.strip().strip('"')
    if isinstance(data, dict):
        return str(data.get("access_token") or data.get("token") or data.get("Token"))
    return str(data)


def poll(base_url: str, token: str, integration_diagram_id: int) -> dict[str, Any] | None:
    response = requests.get(f"{base_url}/api/v2/workflows/instances/new-integrations",
                            params={"id": integration_diagram_id},
                            headers={"Accept": "application/json", "Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    if response.status_code == 204 or not response.text.strip():
        return None
    data = response.json()
    return data if isinstance(data, dict) and data.get("IntegrationInstanceId") else None


def get_fields(base_url: str, token: str, instance_id: int) -> list[dict[str, Any]]:
    response = requests.get(f"{base_url}/api/v2/workflows/instances/tasks/{instance_id}/variables",
                            headers={"Accept": "application/json", "Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def update_fields(base_url: str, token: str, instance_id: int, fields: dict[str, Any]) -> None:
    response = requests.post(f"{base_url}/api/v2/workflows/instances/variables",
                             headers={"Content-Type": "application/json", "Accept": "application/json",
                                      "Authorization": f"Bearer {token}", "X-OnBehalfOf-Id": "system"},
                             data=json.dumps({"TaskId": instance_id, "Fields": fields}), timeout=30)
    response.raise_for_status()


def complete(base_url: str, token: str, instance_id: int) -> None:
    response = requests.patch(f"{base_url}/api/v2/tasks/{instance_id}/action",
                              headers={"Content-Type": "application/json", "Accept": "application/json",
                                       "Authorization": f"Bearer {token}", "X-OnBehalfOf-Id": "system"},
                              data=json.dumps({"Action": "Complete", "CustomAction": "__AUTO__"}), timeout=30)
    response.raise_for_status()


def process_all(base_url: str, login: str, password: str, integration_diagram_id: int,
                compute: Any, limit: int = 1_000_000) -> int:
    """Token once, then poll -> read -> write -> complete for each instance, sequentially."""
    token = get_token(base_url, login, password)
    done = 0
    while done < limit:
        instance = poll(base_url, token, integration_diagram_id)
        if instance is None:
            break
        iid = instance["IntegrationInstanceId"]
        fields = get_fields(base_url, token, iid)
        values = {f["label"]: json.loads(f["valueJson"]) for f in fields}
        by_label = {f["label"]: f for f in fields}
        update = {"field_" + by_label[label]["key"].replace("-", "_"): value
                  for label, value in compute(values, iid).items()}
        update_fields(base_url, token, iid, update)
        complete(base_url, token, iid)
        done += 1
    return done
