"""Open WebUI's entries for the stack's chat models, written into its database before it starts (Open WebUI 0.12.4).

This file runs inside the Open WebUI container, on Open WebUI's own Python, before ``start.sh``; it reads
``VLLM_STACK_WEBUI_MODELS`` (``webui_models_env``'s JSON) and changes nothing else. Open WebUI takes per-model
settings only from database entries (``Models``; ``DEFAULT_MODEL_PARAMS`` holds one value for every model), and shows
a model without an entry to admins only (open_webui/utils/models.py ``get_filtered_models``), so each chat model gets:

- an entry (the model's own id, no base model, owned by no user) when it has none; an admin's edits to it stay;
- ``params.function_calling``: ``native`` where its vLLM server parses tool calls, ``legacy`` where it does not (Open
  WebUI then asks the model for tool calls in a prompt and sends it no tools: open_webui/utils/middleware.py);
- ``meta.capabilities.vision``: true where its vLLM server takes images (a multimodal checkpoint with images on),
  false elsewhere: Open WebUI offers image upload unless a model's capability says otherwise (MessageInput.svelte),
  so a stack of both kinds is right for each model (a per-model value also wins over ``DEFAULT_MODEL_METADATA``,
  utils/models.py: the stack sets no such global default);
- with ``access: all`` the public read grant (user ``*``, read: access_grants.py ``access_control_to_grants`` of None),
  with ``restricted`` none: admins, and the users and groups an admin grants the model, may use it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

ENV = "VLLM_STACK_WEBUI_MODELS"
OWNER = "vllm-stack"
"""The entries' ``user_id``: no account has it, so no user owns (or may edit) them through ownership."""
PUBLIC = ("user", "*", "read")
"""Open WebUI's grant for every signed-in user (principal type, principal id, permission)."""


def webui_models_env(function_calling: dict[str, str], access: str, vision: list[str] | None = None) -> str:
    """The environment value this program reads: chat model id -> ``function_calling``, who may use them, and which
    of them take images."""
    spec = {"access": access, "models": function_calling, "vision": sorted(vision or [])}
    return json.dumps(spec, separators=(",", ":"), sort_keys=True)


async def seed(spec: dict[str, Any]) -> list[str]:
    import open_webui.config  # noqa: F401  (its import runs Open WebUI's database migrations: run_migrations)
    from open_webui.models.access_grants import AccessGrants
    from open_webui.models.models import ModelForm, ModelMeta, ModelParams, Models

    done = []
    for model_id, function_calling in spec["models"].items():
        vision = model_id in spec.get("vision", [])
        current = await Models.get_model_by_id(model_id)
        if current is None:
            meta = ModelMeta(capabilities={"vision": vision})
            form = ModelForm(id=model_id, name=model_id, meta=meta, params=ModelParams(function_calling=function_calling))
            try:
                await Models.insert_new_model(form, OWNER)
            except Exception:  # another replica wrote it first
                current = await Models.get_model_by_id(model_id)
                if current is None:
                    raise
        if current is not None:
            capabilities = current.meta.model_dump().get("capabilities") or {}
            if current.params.model_dump().get("function_calling") != function_calling or capabilities.get("vision") != vision:
                params = ModelParams.model_validate({**current.params.model_dump(), "function_calling": function_calling})
                meta = ModelMeta.model_validate({**current.meta.model_dump(), "capabilities": {**capabilities, "vision": vision}})
                form = ModelForm(id=model_id, base_model_id=current.base_model_id, name=current.name, meta=meta, params=params)
                await Models.update_model_by_id(model_id, form)
        if spec["access"] == "all":
            await AccessGrants.grant_access("model", model_id, *PUBLIC)
        else:
            await AccessGrants.revoke_access("model", model_id, *PUBLIC)
        done.append(f"{model_id}: function_calling={function_calling}, vision={vision}, access={spec['access']}")
    return done


def main() -> int:
    spec = json.loads(os.environ[ENV])
    for line in asyncio.run(seed(spec)):
        print(f"vllm-stack: Open WebUI model {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
