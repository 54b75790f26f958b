"""Keys: one to predict, others to label. A key that predicts cannot label.

- ``/predict``: the key from ``LOOPLINE_API_KEY`` or the file ``LOOPLINE_API_KEY_FILE``
  names (a mounted Kubernetes secret). With neither set, predicting is open.
- ``/feedback``: the labelling keys, each with a name, from ``LOOPLINE_LABEL_KEYS`` or the
  file ``LOOPLINE_LABEL_KEYS_FILE``. Each label is recorded with the name of the key that
  sent it. With none set, labelling is closed: labels decide what the next model learns
  and whether it is promoted, so nobody may send them anonymously.

Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from loopline.core.settings import LabelSettings, ServeSettings, SettingsError

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


class LabelKeys:
    """The labelling keys, by the name each label is recorded with."""

    def __init__(self, keys: dict[str, str]):
        self._keys = {name: key.encode() for name, key in keys.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def source(self, presented: str | None) -> str | None:
        """The name of the key presented, or None when it is no labelling key."""
        given = (presented or "").encode()
        found = None
        for name, key in self._keys.items():  # every key compared: no early exit to time
            if hmac.compare_digest(given, key):
                found = name
        return found

    def __repr__(self) -> str:
        return f"LabelKeys(names={sorted(self._keys)})"


def load_api_key(serve: ServeSettings) -> ApiKey:
    """The key from ``LOOPLINE_API_KEY``, else from the file ``LOOPLINE_API_KEY_FILE``
    names; neither: predicting is open."""
    if serve.api_key:
        return ApiKey(serve.api_key)
    if not serve.api_key_file:
        return ApiKey(None)
    secret = _secret_file("LOOPLINE_API_KEY_FILE", serve.api_key_file).strip()
    if not secret:
        raise SettingsError(
            f"LOOPLINE_API_KEY_FILE={serve.api_key_file} is empty; write the key into it."
        )
    return ApiKey(secret)


def load_label_keys(labels: LabelSettings) -> LabelKeys:
    """The labelling keys of ``LOOPLINE_LABEL_KEYS``, else of the file; none: closed."""
    if labels.keys:
        return LabelKeys(_named(labels.keys.split(","), "LOOPLINE_LABEL_KEYS"))
    if not labels.keys_file:
        return LabelKeys({})
    where = f"LOOPLINE_LABEL_KEYS_FILE={labels.keys_file}"
    lines = _secret_file("LOOPLINE_LABEL_KEYS_FILE", labels.keys_file).splitlines()
    keys = _named(lines, where)
    if not keys:
        raise SettingsError(f"{where} holds no key; write one NAME=KEY per line.")
    return LabelKeys(keys)


def _named(entries: list[str], where: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        name, _, key = entry.partition("=") if "=" in entry else ("labeller", "", entry)
        name, key = name.strip(), key.strip()
        if not name or not key:
            raise SettingsError(f"{where}: an entry has no name or no key; write NAME=KEY.")
        if name in keys:
            raise SettingsError(f"{where}: the name {name!r} is given twice; name each key once.")
        keys[name] = key
    return keys


def _secret_file(variable: str, path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SettingsError(
            f"{variable}={path} cannot be read ({exc.strerror}); "
            "point it at the mounted secret file."
        ) from None
    except UnicodeDecodeError:
        raise SettingsError(
            f"{variable}={path} is not text (UTF-8); write the key as one line of text."
        ) from None
