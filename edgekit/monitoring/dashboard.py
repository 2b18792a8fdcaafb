"""The Grafana dashboard (grafana/edgekit.json): built as data, written as JSON."""

from __future__ import annotations

from typing import Any


def dashboard(cluster: str) -> dict[str, Any]:
    return {"title": f"edgekit {cluster}", "panels": []}
