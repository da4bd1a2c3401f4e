#!/usr/bin/env bash
# Debian packages the real-program tests use: nginx with njs, a Docker engine, promtool, busybox, shellcheck, openssl
# (actionlint checks the workflows' run: scripts with it), node and npm (scripts/schema-types.sh), chromium (the Open WebUI
# end-to-end test drives Debian's own build, never a browser a tool downloads), and Debian's python3 (the real-engine
# tests' stand-in images carry it, tests/standin_images.py).
set -euo pipefail
need=()
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_js_module.so ] || need+=(libnginx-mod-http-js)
command -v dockerd >/dev/null || need+=(docker.io)
command -v promtool >/dev/null || need+=(prometheus)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v npm >/dev/null || need+=(nodejs npm)
command -v chromium >/dev/null || need+=(chromium)
# certificates of the https fake endpoint's own CA, and the system bundle the gateway trusts by default
command -v openssl >/dev/null || need+=(openssl)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or install them (tests that need them skip outside CI)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d keeps package scripts from starting services; the tests start what they need
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
