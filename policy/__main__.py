"""Entry point Pulumi runs for ``--policy-pack policy``: serves the policies of ``policy.policies``.

Pulumi starts it with the pack folder as the working directory (``python -m pulumi.policy <engine> .``),
so the repository root goes on the path for ``policy`` and ``stacks``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from policy.policies import pack_options

PolicyPack(**pack_options())
