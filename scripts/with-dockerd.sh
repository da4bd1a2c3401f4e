#!/usr/bin/env bash
# Run a command with a Docker engine: the one that answers already, or one started here (vfs storage,
# no iptables, no bridge, its own state folder so parallel runs never share one) and stopped afterwards
# by the pid this script started.
set -uo pipefail
if docker version >/dev/null 2>&1; then
  exec "$@"
fi
if ! command -v dockerd >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "with-dockerd: no Docker engine available; docker tests will skip (fail under CI)" >&2
  exec "$@"
fi
state=$(mktemp -d /tmp/vllm-stack-dockerd.XXXXXX)
sock="$state/docker.sock"
# the stand-in NVIDIA hook on dockerd's PATH makes it accept GPU requests (tests/gpu_hook says why)
hooks="$(cd "$(dirname "$0")/.." && pwd)/tests/gpu_hook"
PATH="$hooks:$PATH" dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
  --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid" \
  --host "unix://$sock" >"$state/dockerd.log" 2>&1 &
pid=$!
export DOCKER_HOST="unix://$sock"
for _ in $(seq 1 60); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
if ! docker version >/dev/null 2>&1; then
  echo "with-dockerd: dockerd did not start; see $state/dockerd.log" >&2
  tail -20 "$state/dockerd.log" >&2
fi
"$@"
rc=$?
kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
rm -rf "$state"
exit $rc
