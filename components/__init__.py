"""Pulumi components (``components.stack``, ``components.vllm`` ...) and the pure files they render (``components.files``).

Kept empty so that importing the pure renderers pulls in no provider SDK.
"""
