#!/usr/bin/env bash
# `python -m stacks doctor` on a GPU machine that has Python but no network and not every package the CLI imports
# (the project's H100 machine: Python 3.12, torch, rich and pyyaml, no pydantic, no Docker).
#
#   here:  bash scripts/gpu-doctor.sh fetch [DIR]   downloads the wheels it lacks, at the versions requirements.txt pins,
#                                                   for CPython 3.12 on x86_64 Linux, into DIR (default .gpu/doctor-wheels)
#   there: bash scripts/gpu-doctor.sh [DIR]         unpacks DIR's wheels into a folder put first on PYTHONPATH, then runs
#                                                   `doctor --inventory` and `doctor tests/stacks/h100.yaml` (text and JSON),
#                                                   and prints the total and free memory torch sees, to compare with NVML's
# Send DIR along with the repository (an untracked folder travels with the work tree; an ignored one must be carried).
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=tests/stacks/h100.yaml
# what the pure layers and the doctor import that the GPU image may lack (nvidia-ml-py is there, at an unknown version)
PACKAGES=(nvidia-ml-py pydantic tzdata)

if [ "${1:-}" = fetch ]; then
  dir=${2:-.gpu/doctor-wheels}
  mkdir -p "$dir"
  pins=()
  for p in "${PACKAGES[@]}"; do pins+=("$(grep -E "^$p==" requirements.txt)"); done
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
  python3 -m pip download -q --disable-pip-version-check "${plat[@]}" -d "$dir" "${pins[@]}"
  ls -la "$dir"
  exit 0
fi

dir=${1:-.gpu/doctor-wheels}
site=$(mktemp -d /tmp/doctor-site.XXXXXX)
trap 'rm -rf "$site"' EXIT
for w in "$dir"/*.whl; do python3 -m zipfile -e "$w" "$site"; done
export PYTHONPATH="$site"
python3 --version
set +e
echo "== python3 -m stacks doctor --inventory"
python3 -m stacks doctor --inventory
echo "== python3 -m stacks doctor $STACK"
python3 -m stacks doctor "$STACK"
echo "exit code: $?"
echo "== python3 -m stacks doctor $STACK --json"
python3 -m stacks doctor "$STACK" --json
echo "== torch.cuda.mem_get_info() in a separate process (what vLLM reads)"
env -u PYTHONPATH python3 -c 'import torch; free, total = torch.cuda.mem_get_info(); print(f"total {total / 2**30:.4f} GiB ({total:,} B), free {free / 2**30:.4f} GiB")'
exit 0
