"""VllmImage: the pinned vLLM base plus time zone and apt packages, built with pulumi_docker."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from stacks.plan import ImagePlan
from stacks.render.dockerfile import CONTEXT, TEMPLATE, build_args, content_tag


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
        # the committed template's folder is the build context: nothing is written at preview or deploy time
        built = docker.Image(
            f"{name}-build",
            image_name=f"{args.repository}:{content_tag(args.image)}",
            build=docker.DockerBuildArgs(
                context=str(CONTEXT),
                dockerfile=str(TEMPLATE),
                args=build_args(args.image),
                platform="linux/amd64",
            ),
            skip_push=not args.push,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_ref = built.repo_digest if args.push else built.image_name
        self.register_outputs({"image_ref": self.image_ref})
