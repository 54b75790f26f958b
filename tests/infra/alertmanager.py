"""infra/k8s/base/alertmanager.yaml as the plain Alertmanager configuration the operator
makes of it, and a real Alertmanager (Debian's prometheus-alertmanager) on loopback.

The operator also adds a `namespace="loopline"` matcher to the top route and prefixes the
receivers' names; a Prometheus outside a cluster labels no namespace, so both are left out
here. A field this translation does not know fails the test, rather than being dropped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import daemon, free_port

ROOT = Path(__file__).resolve().parents[2]
ROUTES = ROOT / "infra" / "k8s" / "base" / "alertmanager.yaml"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
_ROUTE = {
    "receiver": "receiver",
    "groupBy": "group_by",
    "groupWait": "group_wait",
    "groupInterval": "group_interval",
    "repeatInterval": "repeat_interval",
    "continue": "continue",
}


def plain_config(urls: dict[str, str], timing: dict[str, str] | None = None) -> dict:
    """The AlertmanagerConfig as alertmanager.yml; ``urls``: the receivers' Secret keys'
    values; ``timing``: group_wait and the like, overridden (a test cannot wait 30 s)."""
    spec = yaml.safe_load(ROUTES.read_text())["spec"]
    _known(spec, {"route", "receivers", "inhibitRules"})
    top = _route(spec["route"])
    top.update(timing or {})
    return {
        "route": top,
        "receivers": [_receiver(r, urls) for r in spec["receivers"]],
        "inhibit_rules": [
            {
                "source_matchers": [_matcher(m) for m in rule["sourceMatch"]],
                "target_matchers": [_matcher(m) for m in rule["targetMatch"]],
                "equal": rule["equal"],
            }
            for rule in spec.get("inhibitRules", [])
            if _known(rule, {"sourceMatch", "targetMatch", "equal"})
        ],
    }


def write_config(folder: Path, urls: dict[str, str], timing: dict[str, str] | None = None) -> Path:
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(plain_config(urls, timing), sort_keys=False))
    return path


def start(folder: Path, config: Path) -> tuple[subprocess.Popen, str]:
    """A real Alertmanager on 127.0.0.1, alone (no cluster); stop it with processes.stop_tree."""
    port = free_port()
    process = daemon(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={folder / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        folder / "alertmanager.log",
    )
    return process, f"127.0.0.1:{port}"


def _route(route: dict) -> dict:
    _known(route, set(_ROUTE) | {"matchers", "routes"})
    plain = {_ROUTE[k]: v for k, v in route.items() if k in _ROUTE}
    if "matchers" in route:
        plain["matchers"] = [_matcher(m) for m in route["matchers"]]
    if "routes" in route:
        plain["routes"] = [_route(r) for r in route["routes"]]
    return plain


def _receiver(receiver: dict, urls: dict[str, str]) -> dict:
    _known(receiver, {"name", "webhookConfigs"})
    hooks = []
    for hook in receiver.get("webhookConfigs", []):
        _known(hook, {"urlSecret", "sendResolved"})
        hooks.append({"url": urls[hook["urlSecret"]["key"]], "send_resolved": hook["sendResolved"]})
    return {"name": receiver["name"], "webhook_configs": hooks}


def _matcher(matcher: dict) -> str:
    _known(matcher, {"name", "value", "matchType"})
    return f'{matcher["name"]}{matcher.get("matchType", "=")}"{matcher.get("value", "")}"'


def _known(node: dict, fields: set[str]) -> bool:
    unknown = set(node) - fields
    assert not unknown, f"alertmanager.yaml uses {sorted(unknown)}: translate them in {__file__}"
    return True
