"""Alerts on drift, promotion and failure: a JSON webhook, or any apprise URL.

An alert that cannot be delivered is logged and dropped: alerting never stops the
monitor. The URL is never logged, because it usually carries a token.
"""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger("loopline.monitoring")


def send_alert(url: str | None, event: str, message: str, details: dict) -> bool:
    """Deliver one alert; True when the receiver accepted it."""
    if not url:
        return False
    scheme = url.split(":", 1)[0]
    try:
        if scheme in ("http", "https"):
            answer = httpx.post(
                url, json={"event": event, "message": message, "details": details}, timeout=5
            )
            answer.raise_for_status()
            return True
        return _apprise(url, scheme, f"loopline: {event}", message)
    except Exception as exc:  # an unreachable receiver must not stop monitoring
        log.warning("alert %s to %s://… failed: %s", event, scheme, type(exc).__name__)
        return False


def _apprise(url: str, scheme: str, title: str, body: str) -> bool:
    # Imported only for an apprise URL: a monitor pass with a webhook or no alerts does
    # not pay its 0.1-0.2 s (the one-shot `loopline monitor` of benchmarks/drift.py).
    import apprise

    quiet = logging.getLogger("apprise")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # apprise logs whole URLs, tokens included
    try:
        notifier = apprise.Apprise()
        if not notifier.add(url):
            log.warning("alert URL (%s://…) is not one apprise knows; alert dropped", scheme)
            return False
        delivered = bool(notifier.notify(title=title, body=body))
    finally:
        quiet.setLevel(level)
    if not delivered:
        log.warning("alert to %s://… was not delivered", scheme)
    return delivered
