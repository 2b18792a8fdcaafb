"""Monitoring: the exporter each proxy runs, and what `render -o DIR` writes under
DIR/_monitoring/ for Prometheus and Grafana (alert rules, a dashboard, a scrape job).
Pure: rendering only."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.inventory import Loaded
from edgekit.monitoring import exporter
from edgekit.monitoring.dashboard import dashboard
from edgekit.render import (
    HAPROXY_CFG,
    KEEPALIVED_CONF,
    STATE_DIR,
    RenderedFile,
    template_environment,
)

EXPORTER_PATH = "/usr/local/lib/edgekit/edgekit-exporter"
CONFIG_PATH = exporter.CONFIG
UNIT = "edgekit-exporter.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/edgekit-exporter.conf"
DEPLOY_DIR = "/var/lib/edgekit"
MONITORING_DIR = "_monitoring"  # under render's DIR; cannot be a peer's name
RULES = "prometheus/edgekit-rules.yml"
SCRAPE = "prometheus/scrape-edgekit.yml"
DASHBOARD = "grafana/edgekit.json"
# The scrape jobs the rules and the dashboard name (up{job=...}).
JOB = "edgekit"
HAPROXY_JOB = "edgekit-haproxy"


def context() -> dict[str, object]:
    return {
        "metrics_path": exporter.METRICS_PATH,
        "socket_name": exporter.SOCKET_NAME,
        "exporter_path": EXPORTER_PATH,
        "config_path": CONFIG_PATH,
        "job": JOB,
        "haproxy_job": HAPROXY_JOB,
    }


def exporter_config(loaded: Loaded) -> str:
    inv = loaded.inventory
    data = {
        "cluster": inv.cluster,
        "instances": [
            {
                "name": f"VI_{v.vrid}",
                "vrid": v.vrid,
                "vip": str(v.address.ip),
                "preferred": v.preferred,
            }
            for v in inv.vips
        ],
        "state_dir": STATE_DIR,
        "deploy_dir": DEPLOY_DIR,
        "haproxy_cfg": HAPROXY_CFG,
        "keepalived_conf": KEEPALIVED_CONF,
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def render_exporter(loaded: Loaded) -> list[RenderedFile]:
    """The exporter's files on every proxy. The program and its unit take effect through
    haproxy: a reload re-executes the exporter (ReloadPropagatedFrom), so a new exporter
    reloads haproxy (seamless) and nothing else. Its config (keepalived's instances and
    VIPs) is read at every scrape and needs no reload of its own; it is filed under
    keepalived because everything it is made of (cluster, vips, vrid, preferred) is in
    keepalived.conf too, so it never adds a reload to a deploy."""
    env = template_environment()
    ctx = context()
    return [
        RenderedFile(
            EXPORTER_PATH,
            Path(exporter.__file__).read_text(),
            0o755,
            "root:root",
            "haproxy",
        ),
        RenderedFile(CONFIG_PATH, exporter_config(loaded), 0o644, "root:root", "keepalived"),
        RenderedFile(
            UNIT_PATH,
            env.get_template("monitoring/edgekit-exporter.service.j2").render(ctx),
            0o644,
            "root:root",
            "systemd",
        ),
        RenderedFile(
            HAPROXY_DROPIN,
            env.get_template("monitoring/haproxy-exporter.conf.j2").render(ctx),
            0o644,
            "root:root",
            "systemd",
        ),
    ]


def render_monitoring(loaded: Loaded) -> list[RenderedFile]:
    """For the operators' Prometheus and Grafana (edgekit deploys none of it). Paths are
    relative to DIR/_monitoring."""
    inv = loaded.inventory
    env = template_environment()
    ctx = {**context(), "inv": inv}
    files = [
        (RULES, env.get_template("monitoring/edgekit-rules.yml.j2").render(ctx)),
        (SCRAPE, env.get_template("monitoring/scrape-edgekit.yml.j2").render(ctx)),
        (DASHBOARD, json.dumps(dashboard(inv.cluster), indent=2, sort_keys=True) + "\n"),
        ("README.md", env.get_template("monitoring/README.md.j2").render(ctx)),
    ]
    return [RenderedFile(f"/{p}", text, 0o644, "root:root", "none") for p, text in files]
