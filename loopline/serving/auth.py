"""Optional API-key authentication for the prediction endpoints.

The key comes from ``LOOPLINE_API_KEY`` or from the file named by ``LOOPLINE_API_KEY_FILE``
(a mounted Kubernetes secret). With neither set, the endpoints are open. Keys are compared
in constant time and never logged.
"""

from __future__ import annotations

import hmac

from loopline.core.settings import ServeSettings, SettingsError

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


def load_api_key(serve: ServeSettings) -> ApiKey:
    """The key from ``LOOPLINE_API_KEY``, else from the file ``LOOPLINE_API_KEY_FILE``
    names; neither: the endpoints are open."""
    if serve.api_key:
        return ApiKey(serve.api_key)
    path = serve.api_key_file
    if not path:
        return ApiKey(None)
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(
            f"LOOPLINE_API_KEY_FILE={path} cannot be read ({exc.strerror}); "
            "point it at the mounted secret file."
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(
            f"LOOPLINE_API_KEY_FILE={path} is not text (UTF-8); write the key as one line of text."
        ) from None
    if not secret:
        raise SettingsError(f"LOOPLINE_API_KEY_FILE={path} is empty; write the key into it.")
    return ApiKey(secret)
