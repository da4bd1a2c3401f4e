"""Compare stacks/render/monitoring/metrics.py's vLLM list with a vLLM sdist's vllm/v1/metrics/loggers.py.

    pip download vllm==X.Y.Z --no-deps --no-binary=:all: -d /tmp/vllm   (or any copy of the sdist)
    .venv/bin/python scripts/vllm_metrics.py /tmp/vllm/vllm-X.Y.Z.tar.gz

Prints the metrics the release defines and exits 1 when the repository's list differs (names or kinds).
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stacks.render.monitoring.metrics import VLLM_METRICS

CREATED = re.compile(r"self\._(gauge|counter|histogram)_cls\(\s*name=\"(vllm:[a-z0-9_:]+)\"", re.S)


def release_metrics(sdist: Path) -> dict[str, str]:
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("vllm/v1/metrics/loggers.py"))
        source = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    found = {name: kind for kind, name in CREATED.findall(source)}
    # the info gauge is created from a variable name (loggers.py: name = "vllm:cache_config_info")
    found |= {name: "gauge" for name in re.findall(r'name = "(vllm:[a-z0-9_]+_info)"', source)}
    return found


def main(argv: list[str]) -> int:
    release = release_metrics(Path(argv[1]))
    ours = {m.name: m.kind for m in VLLM_METRICS}
    for name, kind in sorted(release.items()):
        print(f"{kind:9} {name}")
    missing, extra = sorted(set(release) - set(ours)), sorted(set(ours) - set(release))
    kinds = sorted(n for n in set(release) & set(ours) if release[n] != ours[n])
    for label, names in (("not in the repository's list", missing), ("not in the release", extra), ("kind differs", kinds)):
        if names:
            print(f"{label}: {', '.join(names)}")
    return 1 if missing or extra or kinds else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
