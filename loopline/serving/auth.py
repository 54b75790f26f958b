"""Optional API-key authentication for the prediction endpoints.

The key comes from ``LOOPLINE_API_KEY`` or from the file named by ``LOOPLINE_API_KEY_FILE``
(a mounted Kubernetes secret). With neither set, the endpoints are open. Keys are compared
in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from loopline.core.settings import SettingsError

HEADER = "X-API-Key"


class ApiKey:
    def __init__(self, secret: str | None):
        self._secret = secret.encode() if secret else None

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def allows(self, presented: str | None) -> bool:
        if self._secret is None:
            return True
        # compare_digest takes the same time wherever the first difference is.
        return hmac.compare_digest((presented or "").encode(), self._secret)

    def __repr__(self) -> str:  # never print the key, even by accident
        return f"ApiKey(enabled={self.enabled})"


def load_api_key(env: dict[str, str] | None = None) -> ApiKey:
    env = dict(os.environ if env is None else env)
    if env.get("LOOPLINE_API_KEY"):
        return ApiKey(env["LOOPLINE_API_KEY"])
    path = env.get("LOOPLINE_API_KEY_FILE")
    if not path:
        return ApiKey(None)
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"LOOPLINE_API_KEY_FILE={path} cannot be read ({exc.strerror}); "
            "point it at the mounted secret file."
        ) from None
    if not secret:
        raise SettingsError(f"LOOPLINE_API_KEY_FILE={path} is empty; write the key into it.")
    return ApiKey(secret)
