"""Unpack the vLLM bundle (../shared/gpu/make-vllm-bundle.sh's chunks) on the GPU machine, which has no zstd binary.

The chunks were copied, one call each, into KEEP (``part.00``, ``part.01``, ... and the zstandard wheel). This
installs the wheel into KEEP/zs, streams the parts in order through its decompressor into a tar reader and
extracts into SITE; afterwards ``PYTHONPATH=SITE`` imports vLLM.

    python3 benchmarks/gpu_unpack.py [--keep /tmp/keep] [--site /tmp/site]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path


class Parts(io.RawIOBase):
    """The chunks read back to back as one stream."""

    def __init__(self, paths: list[Path]) -> None:
        self._files: Iterator[Path] = iter(paths)
        self._current = next(self._files).open("rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            n = self._current.readinto(buffer)
            if n:
                return n
            self._current.close()
            nxt = next(self._files, None)
            if nxt is None:
                return 0
            self._current = nxt.open("rb")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", type=Path, default=Path("/tmp/keep"))
    ap.add_argument("--site", type=Path, default=Path("/tmp/site"))
    args = ap.parse_args()
    t0 = time.monotonic()
    wheel = next(args.keep.glob("zstandard-*.whl"))
    zs = args.keep / "zs"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(zs), str(wheel)], check=True)
    sys.path.insert(0, str(zs))
    import zstandard

    parts = sorted(args.keep.glob("part.*"))
    print(f"{len(parts)} parts: {', '.join(p.name for p in parts)}", flush=True)
    args.site.mkdir(parents=True, exist_ok=True)
    with zstandard.ZstdDecompressor().stream_reader(io.BufferedReader(Parts(parts), 1 << 20)) as reader, tarfile.open(fileobj=reader, mode="r|") as tar:
        tar.extractall(args.site, filter="tar")
    print(f"unpacked into {args.site} in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
