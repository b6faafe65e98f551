"""The pooled session reads proxy and CA settings from the environment once, not on every request."""

from __future__ import annotations

import pytest

from airflow_provider_workflowsoft.api.client import WorkflowsoftClient
from airflow_provider_workflowsoft.api.config import ClientConfig


def _session(base_url: str, **config: object):  # type: ignore[no-untyped-def]
    return WorkflowsoftClient(ClientConfig(base_url=base_url, api_token="t", **config)).session  # type: ignore[arg-type]


def test_proxy_from_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = _session("https://api.workflowsoft.com")
    assert session.trust_env is False
    assert session.proxies.get("https") == "http://proxy.example:3128"


def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert not _session("http://127.0.0.1:8765").proxies


def test_ca_bundle_from_environment_unless_verification_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    assert _session("https://api.workflowsoft.com").verify == "/etc/ssl/corporate.pem"
    assert _session("https://api.workflowsoft.com", verify_ssl=False).verify is False
