"""The catalog as one static HTML page: each component's interface, versions, owner,
check report and the pipelines that pin it. Written to ``LOOPLINE_HOME/catalog/index.html``
after every publish and deprecation; nothing to serve, open it in a browser."""

from __future__ import annotations

import html
import time
from pathlib import Path

from loopline.storage.catalog import Catalog

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:left;vertical-align:top}.ok{color:#176f2c}.fail{color:#b00020}.dep{color:#a15c00}
code{background:#f4f4f4;padding:0 .2rem}
"""


def write(catalog: Catalog, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    uses = catalog.uses()
    parts = [
        f"<!doctype html><meta charset=utf-8><title>loopline component catalog</title>"
        f"<style>{STYLE}</style><h1>Component catalog</h1>"
        f"<p>{len(catalog.names())} component(s); written "
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>"
    ]
    for name in catalog.names():
        parts.append(_component(catalog.versions(name), uses.get(name, [])))
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(target)  # a reader never sees half a page
    return target


def _component(versions: list, used_by: list[tuple[str, str]]) -> str:
    latest = versions[-1]
    e = html.escape
    rows = "".join(
        f"<tr><td>in</td><td><code>{e(n)}</code></td><td>{e(v['type'])}"
        f"{' (optional)' if v['optional'] else ''}</td></tr>"
        for n, v in latest.interface["inputs"].items()
    ) + "".join(
        f"<tr><td>out</td><td><code>{e(n)}</code></td><td>{e(v['type'])}</td></tr>"
        for n, v in latest.interface["outputs"].items()
    )
    history = "".join(
        f"<tr><td>{e(str(v.version))}</td><td>{e(time.strftime('%Y-%m-%d', time.localtime(v.published)))}"
        f"</td><td>{e(v.changelog)}</td><td>{_deprecation(v)}</td>"
        f"<td><code>{e(v.digest[:12])}</code></td></tr>"
        for v in reversed(versions)
    )
    checks = "".join(
        f"<tr><td class={'ok' if c['passed'] else 'fail'}>{'passed' if c['passed'] else 'failed'}"
        f"</td><td>{e(c['name'])}</td><td>{e(c['message'])}</td></tr>"
        for c in latest.report.get("checks", [])
    )
    pipelines = "".join(f"<li><code>{e(p)}</code> pins {e(v)}</li>" for p, v in used_by)
    return (
        f"<h2 id={e(latest.name)}>{e(latest.name)} {e(str(latest.version))}</h2>"
        f"<p>{e(latest.description)} Owner: {e(latest.owner)}.</p>"
        f'<p><code>catalog.load("{e(latest.name)}@^{latest.version.major}")</code></p>'
        f"<h3>Interface</h3><table>{rows}</table>"
        f"<h3>Versions</h3><table><tr><th>version</th><th>published</th><th>changelog</th>"
        f"<th>status</th><th>digest</th></tr>{history}</table>"
        f"<h3>Checks of {e(str(latest.version))}</h3><table>{checks}</table>"
        f"<h3>Used by</h3><ul>{pipelines or '<li>no compiled pipeline pins it yet</li>'}</ul>"
    )


def _deprecation(entry) -> str:
    if entry.deprecated:
        return f"<span class=dep>deprecated: {html.escape(entry.deprecated)}</span>"
    return "current"
