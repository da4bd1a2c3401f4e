"""The vllm-stack policy pack: ``pulumi preview --policy-pack policy`` (policies in ``policy.policies``)."""
