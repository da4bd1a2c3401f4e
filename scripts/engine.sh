#!/usr/bin/env bash
# `make engine`: the Pulumi engine built from Go modules, for machines that cannot download Pulumi's release
# binaries (air-gapped or behind a firewall; the Go module proxy, or a mirror of it, is all it needs):
#   pulumi                       the CLI                      (module github.com/pulumi/pulumi/pkg/v3)
#   pulumi-language-python       the Python language host     (engine/language-python, this project's)
#   pulumi-language-python-exec  the host's program runner    (script in github.com/pulumi/pulumi/sdk/v3)
#   pulumi-resource-kubernetes   the kubernetes provider      (module github.com/pulumi/pulumi-kubernetes/provider/v4)
#   pulumi-resource-random       the random provider          (Terraform's random provider through the Pulumi bridge)
#   pulumi-resource-docker       the docker provider          (kreuzwerker's docker provider through the Pulumi bridge)
# Each comes from a small wrapper module under engine/ and is kept in $VLLM_STACK_ENGINE_CACHE (default
# ~/.cache/vllm-stack/engine)/store/<name>/<key>, the key a hash of its wrapper folder, the versions and the Go
# version: a binary already there is reused. They are linked together into <key of all, this script too>/bin, the
# folder to put first on PATH (`scripts/engine.sh --bin-dir` prints it). With Go's caches warm (a machine that
# built them before), a new cache folder is filled in about a minute.
#
# Versions follow the project's pins (.pulumi-version, requirements.txt) where the Go module proxy serves them;
# where it refuses a module, the nearest one it serves is named below with the reason, and the pin check below
# fails when a pin moves so that the table is looked at again.
#   scripts/engine.sh            build what is missing, print each binary, its version and build time
#   scripts/engine.sh --bin-dir  print the bin folder (built or not) and exit
set -euo pipefail
cd "$(dirname "$0")/.."

pin() { sed -n "s/^$1==//p" requirements.txt; }
cli_pin=$(tr -d '[:space:]' < .pulumi-version)
sdk_pin=$(pin pulumi)
docker_pin=$(pin pulumi-docker)
kubernetes_pin=$(pin pulumi-kubernetes)
random_pin=$(pin pulumi-random)

# pin -> module version served by the Go module proxy
case "$cli_pin" in
  # pkg/v3 v3.270.0-v3.273.0 are refused ("This module version is not available"); v3.274.0 is the next
  # served release. A CLI newer than the Python SDK (3.272.0) is the direction Pulumi supports.
  3.272.0) cli_module=v3.274.0 ;;
  *) echo "engine: no Go module version recorded for pulumi $cli_pin (.pulumi-version): add one in $0" >&2; exit 2 ;;
esac
case "$kubernetes_pin" in
  # provider/v4 is served only at v4.0.0-20260115033456-f47bc2d6f199, the commit tagged v4.25.0.
  4.34.2) kubernetes_module=v4.0.0-20260115033456-f47bc2d6f199 kubernetes_version=4.25.0 ;;
  *) echo "engine: no kubernetes provider module recorded for pulumi-kubernetes $kubernetes_pin: add one in $0" >&2; exit 2 ;;
esac
[ "$sdk_pin" = "$cli_pin" ] || { echo "engine: requirements.txt pulumi==$sdk_pin differs from .pulumi-version $cli_pin" >&2; exit 2; }
# the bridged providers report the pinned SDK's version, so the engine's requests for that version match
docker_version=$docker_pin random_version=$random_pin

command -v go >/dev/null || { echo "engine: needs Go 1.26 or newer on PATH (the toolchain, not a package)" >&2; exit 2; }
go_version=$(go env GOVERSION)
key_inputs="$go_version $cli_module $kubernetes_module $docker_version $random_version"
key=$( { echo "$key_inputs"; cat "$0";
         find engine -type f ! -name go.sum | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
top=${VLLM_STACK_ENGINE_CACHE:-$HOME/.cache/vllm-stack/engine}
cache=$top/$key
bin=$cache/bin
if [ "${1:-}" = --bin-dir ]; then echo "$bin"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$bin" "$cache/src" "$cache/log"
ldflags="-s -w"
failed=()
summary=()

# build NAME DIR PKG VERSION TAGS [extra ldflags...]: wrapper module engine/DIR copied to the cache (go.sum is made
# there, never in the repository), its requirements resolved, PKG built into bin/NAME.
build() {
  local name=$1 dir=$2 pkg=$3 version=$4 tags=$5; shift 5
  local src=$cache/src/$dir log=$cache/log/$name.log start=$SECONDS sub store
  sub=$( { echo "$key_inputs $version $tags $*"; find "engine/$dir" -type f ! -name go.sum | LC_ALL=C sort | xargs sha256sum; } \
         | sha256sum | cut -c1-16)
  store=$top/store/$name/$sub
  if [ -x "$store/$name" ]; then
    ln -f "$store/$name"* "$bin/"
    summary+=("$(printf '%-28s %-40s reused' "$name" "$version")"); return 0
  fi
  echo "engine: building $name $version (log: $log)"
  rm -rf "$src" && cp -r "engine/$dir" "$src" && mkdir -p "$store"
  if ! (cd "$src" && prepare_"${dir//-/_}" && go mod tidy && \
        go build -trimpath -tags "$tags" -ldflags "$ldflags $*" -o "$store/$name.tmp" "$pkg") >"$log" 2>&1; then
    tail -20 "$log" >&2
    failed+=("$name")
    summary+=("$(printf '%-28s %-40s FAILED after %ss (see %s)' "$name" "$version" $((SECONDS - start)) "$log")")
    return 0
  fi
  mv "$store/$name.tmp" "$store/$name"
  if ! (cd "$src" && finish_"${dir//-/_}" "$store/$name") >>"$log" 2>&1; then
    rm -f "$store/$name"
    tail -20 "$log" >&2
    failed+=("$name")
    summary+=("$(printf '%-28s %-40s FAILED after build (see %s)' "$name" "$version" "$log")")
    return 0
  fi
  ln -f "$store/$name"* "$bin/"
  summary+=("$(printf '%-28s %-40s built in %ss' "$name" "$version" $((SECONDS - start)))")
}

prepare_pulumi() { :; }
prepare_language_python() { :; }
prepare_docker() { :; }
prepare_random() { :; }
finish_pulumi() { :; }
finish_kubernetes() { :; }
# the language host runs programs through the SDK module's exec script, found beside it
finish_language_python() {
  install -m 755 "$(go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)/python/cmd/pulumi-language-python-exec" \
    "$(dirname "$1")/pulumi-language-python-exec"
}
# the bridged providers' schema (GetSchema) and the bridge's metadata, generated from their mappings
finish_random() { "$1" --write-schema; }
finish_docker() { "$1" --write-schema; }
# the provider's cmd embeds schema-embed.json, generated from the module's schema.json with the version set
prepare_kubernetes() {
  go mod download "github.com/pulumi/pulumi-kubernetes/provider/v4@$kubernetes_module"
  local mod
  mod=$(go mod download -json "github.com/pulumi/pulumi-kubernetes/provider/v4@$kubernetes_module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  python3 - "$mod/cmd/pulumi-resource-kubernetes" "$kubernetes_version" <<'EOF'
import json, sys
src, version = sys.argv[1], sys.argv[2]
schema = json.load(open(f"{src}/schema.json"))
schema["version"] = version
json.dump(schema, open("schema-embed.json", "w"), separators=(",", ":"))
open("terraform-mapping-embed.json", "w").write(open(f"{src}/terraform-mapping.json").read())
EOF
}

version_pkg=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version
# Pulumi's release tags: os/user in pure Go, gRPC without its trace package
tags=osusergo,grpcnotrace
build pulumi pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$cli_module" $tags "-X $version_pkg=$cli_module"
build pulumi-language-python language-python . "$cli_module" $tags "-X $version_pkg=$cli_module"
build pulumi-resource-kubernetes kubernetes . "$kubernetes_version ($kubernetes_module)" $tags \
  "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$kubernetes_version"
# bridged providers panic at start without their version
build pulumi-resource-random random . "$random_version (bridged)" $tags "-X main.version=$random_version"
build pulumi-resource-docker docker . "$docker_version (bridged)" $tags "-X main.version=$docker_version"

printf '%s\n' "${summary[@]}"
echo "engine: $bin"
if [ ${#failed[@]} -gt 0 ]; then
  echo "engine: not built: ${failed[*]}" >&2
  exit 1
fi
