#!/usr/bin/env bash
# Upstream types the monitoring objects are checked against (tests/test_monitoring_types.py), installed with npm
# into .cache/schema-types (no lock file; versions pinned here):
# - @kubernetes-models/prometheus-operator 6.0.0: generated from the prometheus-operator's Go API types of v0.91.0
#   (the types controller-gen turns into its CRDs; no package reachable here ships the CRD YAML itself):
#   TypeScript interfaces and JSON-schema validators for ServiceMonitor, PodMonitor, PrometheusRule.
# - @grafana/schema 13.2.0: Grafana 13.2's dashboard and panel-options types (the pinned grafana/grafana:13.2.0).
# - typescript 5.9.3: tsc rejects unknown fields, wrong types and missing required fields in object literals.
set -euo pipefail
dir=${SCHEMA_TYPES_DIR:-.cache/schema-types}
want="@kubernetes-models/prometheus-operator@6.0.0 @grafana/schema@13.2.0 typescript@5.9.3"
if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then exit 0; fi
if ! command -v npm >/dev/null; then
  echo "schema-types: npm is missing (Debian nodejs + npm; scripts/system-deps.sh installs them as root)" >&2
  exit 0
fi
mkdir -p "$dir"
echo '{"private": true, "type": "module"}' > "$dir/package.json"
# shellcheck disable=SC2086
npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error $want >/dev/null
echo "$want" > "$dir/.installed"
