"""The vLLM image's Dockerfile: the pinned base plus time zone and optional apt packages."""

from __future__ import annotations

import hashlib

from stacks.plan import ImagePlan


def dockerfile(image: ImagePlan) -> str:
    lines = [
        "# Rendered by vllm-stack; edit the stack config (image, timezone), not this file.",
        f"ARG BASE_IMAGE={image.base}",
        "FROM ${BASE_IMAGE}",
        f"ARG TZ={image.timezone}",
        "ENV TZ=${TZ}",
        "# vLLM's image ships tzdata; install it only if the zone file is missing",
        'RUN if [ ! -e "/usr/share/zoneinfo/${TZ}" ]; then \\',
        "      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tzdata \\",
        "      && rm -rf /var/lib/apt/lists/*; \\",
        "    fi \\",
        '    && ln -snf "/usr/share/zoneinfo/${TZ}" /etc/localtime \\',
        '    && echo "${TZ}" > /etc/timezone',
    ]
    if image.apt_packages:
        pkgs = " ".join(sorted(image.apt_packages))
        lines += [
            "RUN apt-get update \\",
            f"    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {pkgs} \\",
            "    && rm -rf /var/lib/apt/lists/*",
        ]
    return "\n".join(lines) + "\n"


def content_tag(image: ImagePlan) -> str:
    """Image tag that changes exactly when the Dockerfile does."""
    return hashlib.sha256(dockerfile(image).encode()).hexdigest()[:12]


def render(image: ImagePlan) -> dict[str, str]:
    return {"Dockerfile": dockerfile(image)}
