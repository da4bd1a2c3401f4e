"""Hugging Face repositories that serve their weights only with a token of an account that accepted the model's license.

Kept apart from the catalog's architecture facts: whether a download needs ``hfToken`` is a fact about the
repository, not the model. Only organisations whose model pages ask every visitor to accept a license first
are listed (Meta's Llama community licenses, Google's Gemma terms of use); other repositories are taken as open.
"""

from __future__ import annotations

GATED_PREFIXES = ("meta-llama/", "google/gemma")
"""Repository id prefixes (case-insensitive) of gated models."""


def is_gated(model: str) -> bool:
    """Whether downloading ``model`` (an HF id) needs an accepted license and a token."""
    return model.strip().lower().startswith(GATED_PREFIXES)
