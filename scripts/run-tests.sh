#!/usr/bin/env bash
# `make test` after lint and types: everything the tests need, then the suite, with the Pulumi engine built alongside.
# The engine's first build is long (about an hour of two cores, Go compiling the kubernetes provider most of it) and
# needs nothing but Go, so it starts first, in the background, while the system packages, the schema types and Open
# WebUI are installed and every test but the real-engine ones runs; those run last, once the engine is there. A
# machine that built it before reuses it in seconds. The background build is stopped by the pid this script started
# if the script ends early.
#   PY=.venv/bin/python PYTEST_ARGS="-n 2" bash scripts/run-tests.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
mkdir -p .cache
engine_log=.cache/engine-build.log
# its own process group (setsid), so that stopping it stops the Go compilers it started too
setsid bash scripts/engine.sh >"$engine_log" 2>&1 &
engine_pid=$!
trap 'kill -- "-$engine_pid" 2>/dev/null' EXIT
started=$SECONDS

set -e
bash scripts/system-deps.sh
bash scripts/schema-types.sh
bash scripts/open-webui.sh
set +e

engine_tests=(tests/test_engine_*.py)
ignore=()
for t in "${engine_tests[@]}"; do ignore+=(--ignore "$t"); done
bash scripts/with-dockerd.sh "$PY" -m pytest "${pytest_args[@]}" "${ignore[@]}"
suite=$?

echo "run-tests: waiting for the Pulumi engine (building for $((SECONDS - started)) s so far; log: $engine_log)"
wait "$engine_pid"
engine=$?
trap - EXIT
cat "$engine_log"
[ "$engine" = 0 ] || echo "run-tests: the Pulumi engine is incomplete; real-engine tests skip (fail under CI)" >&2
bash scripts/with-dockerd.sh "$PY" -m pytest "${pytest_args[@]}" "${engine_tests[@]}"
real=$?
echo "run-tests: suite exit $suite, real-engine tests exit $real, $((SECONDS - started)) s in all"
[ "$suite" = 0 ] && [ "$real" = 0 ]
