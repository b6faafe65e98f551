"""Embedded deployment (LocalExecutor, SQLite; separate scheduler, dag-processor, triggerer, API server):
the deferrable sensor waits in the real triggerer and a mapped completion finishes what it received."""

from __future__ import annotations

import pytest

from tests.deployment.conftest import Deployment, assert_clean, deferred_sensor_round, record_figures

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(900)]


def test_deferrable_sensor_in_the_real_triggerer(embedded: Deployment) -> None:
    result = deferred_sensor_round(embedded)
    assert result["state"] == "success", embedded.log_tail()
    assert_clean(result["check"])
    runs = embedded.list_runs("deploy_deferred")
    assert any(r.get("run_id") == result["run_id"] and r.get("state") == "success" for r in runs), runs
    record_figures("embedded_deferrable_sensor", {
        "startup_s": round(embedded.startup_s, 1),  # type: ignore[attr-defined]
        **{k: v for k, v in result.items() if k not in ("ids", "check")},
        "lost": len(result["check"]["lost"]), "duplicated": len(result["check"]["duplicated"]),
        "open_claims": len(result["check"]["open_claims"]),
    })
