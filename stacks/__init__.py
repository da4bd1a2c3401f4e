"""The pure layers of vllm-stack, one way: config -> plan -> render, with the CLI on top. Imports no Pulumi."""
