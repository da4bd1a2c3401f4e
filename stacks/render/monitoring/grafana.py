"""Grafana provisioning for docker: the stack's Prometheus as the data source, and a file provider for the dashboards.

Formats from Grafana's provisioning docs (apiVersion 1 data sources and dashboard providers); Grafana reads them
from ``GF_PATHS_PROVISIONING`` (/etc/grafana/provisioning in the grafana/grafana image).
"""

from __future__ import annotations

import yaml

from stacks.plan import StackPlan
from stacks.render.monitoring.dashboards import DATASOURCE_UID

FOLDER = "vLLM stack"
PROVISIONING = "/etc/grafana/provisioning"
"""``GF_PATHS_PROVISIONING`` of the grafana/grafana image; its datasources/ and dashboards/ folders exist there."""
DATASOURCES_FILE = f"{PROVISIONING}/datasources/vllm-stack.yml"
PROVIDER_FILE = f"{PROVISIONING}/dashboards/vllm-stack.yml"
DASHBOARDS_DIR = f"{PROVISIONING}/dashboards"
"""The provider reads the *.json files beside its own YAML (the folder exists in the image, so uploads need no new folder)."""


def datasources(plan: StackPlan) -> str:
    assert plan.prometheus, "docker's Grafana reads the stack's Prometheus"
    source = {
        "name": "Prometheus (vllm-stack)",
        "type": "prometheus",
        "uid": DATASOURCE_UID,
        "access": "proxy",
        "url": f"http://{plan.prometheus.service.address}",
        "isDefault": True,
        "editable": False,
        "jsonData": {"timeInterval": f"{plan.prometheus.scrape_interval_seconds}s"},
    }
    return yaml.safe_dump({"apiVersion": 1, "datasources": [source]}, sort_keys=False)


def dashboard_provider(path: str) -> str:
    """Dashboards from ``path``; the UI cannot change them (Grafana keeps no state here: edits would be lost)."""
    provider = {
        "name": "vllm-stack",
        "type": "file",
        "folder": FOLDER,
        "disableDeletion": True,
        "allowUiUpdates": False,
        "updateIntervalSeconds": 60,
        "options": {"path": path},
    }
    return yaml.safe_dump({"apiVersion": 1, "providers": [provider]}, sort_keys=False)
