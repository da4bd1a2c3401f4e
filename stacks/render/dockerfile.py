"""The vLLM image's Dockerfile: one committed template (``vllm_image/Dockerfile``) and its build arguments.

The program builds the template's folder with the plan's build arguments, so nothing is written at
deploy (or preview) time; ``render`` writes the template with those values as the ARG defaults.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from stacks.plan import ImagePlan

CONTEXT = Path(__file__).resolve().parent / "vllm_image"
"""Build context: holds the Dockerfile and nothing else."""
TEMPLATE = CONTEXT / "Dockerfile"


def build_args(image: ImagePlan) -> dict[str, str]:
    args = {"BASE_IMAGE": image.base, "TZ": image.timezone}
    if image.apt_packages:
        args["APT_PACKAGES"] = " ".join(sorted(image.apt_packages))
    return args


def dockerfile(image: ImagePlan) -> str:
    """The template with this image's build arguments as defaults: builds the same image without any --build-arg."""
    text = TEMPLATE.read_text()
    for name, value in build_args(image).items():
        line = f"ARG {name}={value}" if " " not in value else f'ARG {name}="{value}"'
        # the line is escaped for re's template: a backslash in a value is the value's, never a regex escape
        text, n = re.subn(rf"^ARG {name}\b.*$", line.replace("\\", "\\\\"), text, count=1, flags=re.M)
        assert n == 1, f"the template declares ARG {name}"
    return text


def content_tag(image: ImagePlan) -> str:
    """Image tag that changes exactly when the Dockerfile or a build argument does."""
    return hashlib.sha256(dockerfile(image).encode()).hexdigest()[:12]


def render(image: ImagePlan) -> dict[str, str]:
    return {"Dockerfile": dockerfile(image)}
