"""VllmImage: the pinned vLLM base plus time zone and apt packages, built with pulumi_docker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.files.dockerfile import content_tag, dockerfile
from stacks.plan import ImagePlan

BUILD_DIR = Path(__file__).resolve().parent.parent / "build"


@dataclass
class VllmImageArgs:
    image: ImagePlan
    """Base, time zone and packages from the plan."""
    repository: str
    """Image name without tag: local (docker target) or in ``image.registry`` (kubernetes)."""
    push: bool = False
    """Push to the registry (kubernetes target); the docker target builds locally only."""


class VllmImage(pulumi.ComponentResource):
    image_ref: pulumi.Output[str]
    """Reference containers should run: the content-tagged name, or the pushed digest."""

    def __init__(self, name: str, args: VllmImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-stack:index:VllmImage", name, None, opts)
        content = dockerfile(args.image)
        tag = content_tag(args.image)
        # pulumi_docker builds from a directory: build/<tag>/ is content-addressed, so stacks never overwrite each other's
        context = BUILD_DIR / tag
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(content)
        built = docker.Image(
            f"{name}-build",
            image_name=f"{args.repository}:{tag}",
            build=docker.DockerBuildArgs(
                context=str(context),
                dockerfile=str(context / "Dockerfile"),
                args={"BASE_IMAGE": args.image.base, "TZ": args.image.timezone},
                platform="linux/amd64",
            ),
            skip_push=not args.push,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_ref = built.repo_digest if args.push else built.image_name
        self.register_outputs({"image_ref": self.image_ref})
