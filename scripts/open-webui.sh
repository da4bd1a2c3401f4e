#!/usr/bin/env bash
# What tests/test_webui_e2e.py runs, installed outside the repo in ${XDG_CACHE_HOME:-~/.cache}/vllm-stack and reused:
# - Open WebUI 0.12.4 from PyPI (the release the stack's image pins) in its own venv, with the packages its code
#   imports at start and on the stack's paths (sign-in, chat through an OpenAI connection, document upload embedded
#   through an OpenAI-compatible server into Chroma), each at the version Open WebUI pins. Left out, because the stack
#   never runs them there: sentence-transformers, transformers, accelerate and einops (local embedding and reranking
#   models, with torch: about 3 GB; the stack embeds through its vLLM server), faster-whisper (local speech to text),
#   opencv-python-headless and rapidocr (OCR of images inside documents), pandas and pyarrow (spreadsheet loading).
#   Cold, without a pip cache: 3.5-7 minutes here (network and a shared 2-core machine) and 1.1 GB, most of it Open
#   WebUI's own wheel (260 MB with its frontend), Chroma and its dependencies.
# - playwright-core 1.65.2 from npm (no lock file; it downloads no browser): drives Debian's chromium.
# Each part is complete once its marker names what it holds; a half-done install is started again.
set -euo pipefail
CI=${CI:-}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vllm-stack
webui_version=0.12.4
playwright="playwright-core@1.65.2"
webui=${OPEN_WEBUI_VENV:-$cache/open-webui-$webui_version}
node_dir=${PLAYWRIGHT_DIR:-$cache/playwright-core}
left_out="sentence-transformers transformers accelerate einops faster-whisper opencv-python-headless rapidocr pandas pyarrow"
# what the marker of a complete Open WebUI install says
webui_marker="open-webui==$webui_version without $left_out"

# what cannot be installed fails `make test` under CI=true only; elsewhere the test that needs it skips, saying why
give_up() {
  echo "open-webui: $1" >&2
  case "${CI,,}" in 1 | true | yes) exit 1 ;; esac
  echo "open-webui: tests/test_webui_e2e.py skips without it (under CI=true it fails)" >&2
  exit 0
}

if [ ! -f "$webui/.installed" ] || [ "$(cat "$webui/.installed")" != "$webui_marker" ]; then
  py=${OPEN_WEBUI_PYTHON:-python3}
  # Open WebUI 0.12.4: Requires-Python >=3.11, <3.13
  if ! "$py" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
    give_up "Open WebUI $webui_version needs Python 3.11 or 3.12; set OPEN_WEBUI_PYTHON to one"
  fi
  start=$(date +%s)
  rm -rf "$webui"
  "$py" -m venv "$webui"
  # pip's own log, shown when it fails (it reports the packages left out above as unmet requirements of open-webui)
  pip() { "$webui/bin/python" -m pip install --disable-pip-version-check "$@" >> "$webui/pip.log" 2>&1 || { tail -20 "$webui/pip.log" >&2; give_up "pip failed (log: $webui/pip.log)"; }; }
  pip --no-deps "open-webui==$webui_version"
  # Open WebUI's own pins (its Requires-Dist and requirements-slim.txt) constrain every package, dependencies included
  "$webui/bin/python" - "$left_out" > "$webui/constraints.txt" 3> "$webui/requirements.txt" <<'EOF'
import os, re, sys, sysconfig
from importlib.metadata import requires
left_out = set(sys.argv[1].split())
pins = {}
slim = os.path.join(sysconfig.get_paths()["purelib"], "requirements-slim.txt")
lines = [ln.split("#")[0].strip() for ln in open(slim)] + [r for r in requires("open-webui") if ";" not in r]
for line in filter(None, lines):
    name = re.split(r"[=<>\[ ]", line)[0].lower().replace("_", "-")
    pins[name] = re.sub(r"\[.*?\]", "", line).strip()
print("\n".join(sorted(pins.values())))
wanted = [r for r in requires("open-webui") if ";" not in r and re.split(r"[=\[]", r)[0].lower() not in left_out]
with os.fdopen(3, "w") as f:
    f.write("\n".join(wanted) + "\n")
EOF
  pip -c "$webui/constraints.txt" -r "$webui/requirements.txt"
  echo "$webui_marker" > "$webui/.installed"
  echo "open-webui: installed in $(($(date +%s) - start)) s, $(du -sh "$webui" | cut -f1) in $webui" >&2
fi

if [ ! -f "$node_dir/.installed" ] || [ "$(cat "$node_dir/.installed")" != "$playwright" ]; then
  if ! command -v npm >/dev/null; then
    give_up "npm is missing (Debian nodejs + npm; scripts/system-deps.sh installs them as root)"
  fi
  mkdir -p "$node_dir"
  echo '{"private": true}' > "$node_dir/package.json"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$node_dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$playwright" >/dev/null ||
    give_up "npm could not install $playwright"
  echo "$playwright" > "$node_dir/.installed"
fi
