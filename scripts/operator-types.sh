#!/usr/bin/env bash
# The prometheus-operator's API types, for strict checks of the ServiceMonitors and PrometheusRule the stack
# renders (tests/test_monitoring_crds.py). No package ships the operator's CRD YAML from a registry reachable here;
# @kubernetes-models/prometheus-operator 6.0.0 is generated from the operator's Go API types of v0.91.0 (the types
# controller-gen turns into those CRDs): TypeScript interfaces (tsc rejects unknown fields, wrong types, missing
# required fields) and JSON-schema validators (patterns, enums).
set -euo pipefail
dir=${OPERATOR_TYPES_DIR:-.cache/operator-types}
want="@kubernetes-models/prometheus-operator@6.0.0 typescript@5.9.3"
if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want" ]; then exit 0; fi
if ! command -v npm >/dev/null; then
  echo "operator-types: npm is missing (Debian nodejs + npm; scripts/system-deps.sh installs them as root)" >&2
  exit 0
fi
mkdir -p "$dir"
echo '{"private": true, "type": "module"}' > "$dir/package.json"
# shellcheck disable=SC2086
npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error $want >/dev/null
echo "$want" > "$dir/.installed"
