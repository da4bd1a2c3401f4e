"""Pulumi ComponentResources (``stack``, ``vllm``, ``gateway``, ``webui``, ``monitoring``, ``image``) and the two
platforms that run their workloads. Everything pure they use lives in ``stacks``."""
