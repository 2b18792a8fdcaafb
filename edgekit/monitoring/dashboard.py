"""The Grafana dashboard (grafana/edgekit.json): built as data, written as JSON.

It queries edgekit's exporter and haproxy's own Prometheus exporter only; the services
are TCP proxies, so "requests" are sessions (connections) and errors are haproxy's
request, connection and response errors.
"""

from __future__ import annotations

import re
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'cluster="$cluster"'
SERVICES = f'{SEL},proxy!="stats"'  # the services' frontends (not the stats page)


def _rate(by: str, metric: str, selector: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


# Panel title, kind, unit, [(expression, legend)].
_Panel = tuple[str, str, str, list[tuple[str, str]]]


def _one(title: str, kind: str, unit: str, by: str, series: str, legend: str) -> _Panel:
    """A panel of one query: `series` in this cluster, aggregated `by` (`max by (vip)`)."""
    return (title, kind, unit, [(f"{by} ({series}{{{SEL}}})", legend)])


# Who holds the VIPs, and VRRP's view of it.
_VIP_PANELS: list[_Panel] = [
    _one("VIP holders", "state-timeline", "none",
         "max by (vip, peer)", "edgekit_vip_held", "{{vip}} on {{peer}}"),
    _one("VRRP state per peer", "state-timeline", "none",
         "max by (peer, vip)", "edgekit_vrrp_state", "{{peer}} {{vip}}"),
    _one("Holders per VIP (1 is right)", "timeseries", "none",
         "sum by (vip)", "edgekit_vip_held", "{{vip}}"),
    _one("VRRP priority", "timeseries", "none",
         "max by (peer, vip)", "edgekit_vrrp_priority", "{{peer}} {{vip}}"),
]  # fmt: skip
_PANELS: list[_Panel] = [
    *_VIP_PANELS,
    (
        "VRRP transitions (15 min)",
        "timeseries",
        "none",
        [
            (
                f"sum by (peer, vip) (increase(edgekit_vrrp_transitions_total{{{SEL}}}[15m]))",
                "{{peer}} {{vip}}",
            )
        ],
    ),
    (
        "Sessions per service (connections/s)",
        "timeseries",
        "cps",
        [
            (
                _rate("proxy", "haproxy_frontend_sessions_total", SERVICES),
                "{{proxy}}",
            )
        ],
    ),
    (
        "Errors per service (/s)",
        "timeseries",
        "short",
        [
            (
                f"sum by (proxy) (rate(haproxy_frontend_request_errors_total{{{SERVICES}}}"
                "[$__rate_interval]))",
                "{{proxy}} request errors",
            ),
            (
                "sum by (proxy) (rate(haproxy_backend_connection_errors_total"
                f'{{{SEL},proxy!="edgekit_exporter"}}[$__rate_interval]))',
                "{{proxy}} connection errors",
            ),
            (
                "sum by (proxy) (rate(haproxy_backend_response_errors_total"
                f'{{{SEL},proxy!="edgekit_exporter"}}[$__rate_interval]))',
                "{{proxy}} response errors",
            ),
        ],
    ),
    (
        "Session rate per peer",
        "timeseries",
        "cps",
        [
            (
                _rate("peer", "haproxy_frontend_sessions_total", SERVICES),
                "{{peer}}",
            )
        ],
    ),
    (
        "Backend servers up",
        "state-timeline",
        "none",
        [
            (
                f'max by (proxy, server) (haproxy_server_status{{{SEL},state="UP",'
                'proxy!="edgekit_exporter"})',
                "{{proxy}}/{{server}}",
            )
        ],
    ),
    (
        "Servers up per backend",
        "timeseries",
        "none",
        [
            (
                "min by (proxy) (haproxy_backend_active_servers"
                f'{{{SEL},proxy!="edgekit_exporter"}})',
                "{{proxy}}",
            )
        ],
    ),
    (
        "Config generations (distinct haproxy.cfg + keepalived.conf; 1 is right)",
        "stat",
        "none",
        [
            (
                "count(count by (haproxy_cfg_sha256, keepalived_conf_sha256) "
                f"(edgekit_config_info{{{SEL}}}))",
                "generations",
            )
        ],
    ),
]

_MAPPINGS = {
    "VRRP state per peer": {
        "0": ("INIT", "blue"),
        "1": ("BACKUP", "green"),
        "2": ("MASTER", "dark-green"),
        "3": ("FAULT", "red"),
        "4": ("STOPPED", "dark-red"),
    },
    "VIP holders": {"0": ("-", "transparent"), "1": ("holds", "green")},
    "Backend servers up": {"0": ("DOWN", "red"), "1": ("UP", "green")},
}


def _mappings(title: str) -> list[dict[str, Any]]:
    values = _MAPPINGS.get(title)
    if not values:
        return []
    options = {k: {"text": text, "color": color} for k, (text, color) in values.items()}
    return [{"type": "value", "options": options}]


def dashboard(cluster: str) -> dict[str, Any]:
    panels = []
    for n, (title, kind, unit, targets) in enumerate(_PANELS):
        panels.append(
            {
                "id": n + 1,
                "title": title,
                "type": kind,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
                "fieldConfig": {"defaults": {"unit": unit, "mappings": _mappings(title)}},
                "targets": [
                    {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": e, "legendFormat": lg}
                    for i, (e, lg) in enumerate(targets)
                ],
            }
        )
    return {
        "title": "edgekit",
        "uid": "edgekit",
        "tags": ["edgekit", "haproxy", "keepalived"],
        "schemaVersion": 39,
        "timezone": "utc",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "cluster",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(edgekit_vrrp_state, cluster)",
                    "current": {"text": cluster, "value": cluster},
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


_METRIC = re.compile(r"\b((?:edgekit|haproxy)_[a-z_]+)\b")


def metrics_queried(board: dict[str, Any]) -> set[str]:
    """Every metric name a dashboard's panels and variables query."""
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v.get("query", "") for v in board["templating"]["list"] if v["type"] == "query"]
    # Label values ("edgekit_exporter") are not metrics.
    return {m for e in exprs for m in _METRIC.findall(re.sub(r'"[^"]*"', '""', e))}
