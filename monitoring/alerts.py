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
        import apprise

        notifier = apprise.Apprise()
        if not notifier.add(url):
            log.warning("alert URL (%s://…) is not one apprise knows; alert dropped", scheme)
            return False
        return bool(notifier.notify(title=f"loopline: {event}", body=message))
    except Exception as exc:  # an unreachable receiver must not stop monitoring
        log.warning("alert %s to %s://… failed: %s", event, scheme, type(exc).__name__)
        return False
