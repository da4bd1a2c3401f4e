"""The rendered Dockerfile built by a real Docker engine on a local stand-in base, run with --network none."""

from __future__ import annotations

import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import tzdata

from stacks.config import load_stack
from stacks.plan import plan
from stacks.render.dockerfile import dockerfile
from tests.conftest import require_program, unavailable

BUSYBOX_APPLETS = ("sh", "ln", "echo", "cat", "date", "test", "[", "env", "rm")


def _docker(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def engine() -> None:
    require_program("docker")
    if _docker("version", timeout=30).returncode != 0:
        unavailable("a running Docker engine (make test starts one)")


def _standin_rootfs(tar_path: Path, zones: list[str]) -> None:
    """A tiny 'base image': static busybox plus the zoneinfo files (from the tzdata package)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        unavailable("/bin/busybox (Debian busybox-static)")
    zoneinfo = Path(tzdata.__file__).parent / "zoneinfo"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(busybox, "bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for d in ("etc", "tmp", "usr/share/zoneinfo"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for zone in zones:
            tar.add(zoneinfo / zone, f"usr/share/zoneinfo/{zone}")


def test_rendered_dockerfile_builds_and_sets_the_timezone(engine: None, tmp_path: Path) -> None:
    image = plan(load_stack("dev")).image
    assert image.timezone == "Asia/Seoul"
    tag = uuid.uuid4().hex[:8]
    base = f"vllm-stack-test/standin-vllm-openai:{tag}"
    built = f"vllm-stack-test/vllm:{tag}"
    _standin_rootfs(tmp_path / "rootfs.tar", ["Asia/Seoul", "UTC"])
    try:
        r = _docker("import", str(tmp_path / "rootfs.tar"), base)
        assert r.returncode == 0, r.stderr
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile(image))
        r = _docker("build", "--network", "none", "--build-arg", f"BASE_IMAGE={base}", "-t", built, str(ctx), timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        env_zone = _docker("run", "--rm", "--network", "none", built, "date", "+%Z")
        assert env_zone.stdout.strip() == "KST", env_zone.stderr
        file_zone = _docker("run", "--rm", "--network", "none", "-e", "TZ=", built, "sh", "-c", "unset TZ; date +%Z; cat /etc/timezone")
        assert file_zone.stdout.split() == ["KST", "Asia/Seoul"], file_zone.stdout + file_zone.stderr
        tz = _docker("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", built)
        assert "TZ=Asia/Seoul" in tz.stdout.split()
    finally:
        _docker("rmi", "-f", built, base, timeout=120)
