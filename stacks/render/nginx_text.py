"""Text for nginx.conf: strings as nginx's parser reads them back."""

from __future__ import annotations

import json


def json_text(obj: object) -> str:
    """JSON for an nginx single-quoted string: no ``$`` (variables) and escaped quotes."""
    text = json.dumps(obj, separators=(",", ":")).replace("$", "\\u0024")
    return text.replace("\\", "\\\\").replace("'", "\\'")


def nginx_string(s: str) -> str:
    """``s`` double-quoted for nginx.conf: backslashes and quotes escaped, which nginx's parser undoes."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
