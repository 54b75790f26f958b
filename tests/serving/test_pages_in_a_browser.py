"""Every page an operator opens, in a real headless Chromium (Debian's, driven by
Playwright through `executable_path`): the Swagger UI of a real server, the evaluation,
validation and drift reports, and the component catalog. Each must render its key
content with no console error and load nothing from another host; a screenshot of each
lands in the test's folder (docs/images/ keeps one of each).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from loopline.core.settings import load_settings
from loopline.ml.steps import validate_step
from loopline.ml.validation import ValidationConfig
from loopline.storage.catalog import Catalog
from loopline.storage.database import open_database
from tests.monitoring.test_drift_by_type import judge, table
from tests.storage.test_catalog import VALUES, publish

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.xdist_group("served"),  # the Swagger UI is the session server's
    pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (make test does)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's own sandbox needs user namespaces the tests' root lacks
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def opened(browser, url: str, shot: Path, *, wait_for: str) -> str:
    """Open ``url``; return its text once ``wait_for`` shows. Fails on a console error, an
    uncaught exception, or a request to any other origin than the page's own."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, elsewhere = [], []
    origin = urlparse(url)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def request(r) -> None:
        seen = urlparse(r.url)
        if seen.scheme not in ("data", "blob") and (seen.scheme, seen.netloc) != (
            origin.scheme,
            origin.netloc,
        ):
            elsewhere.append(r.url)

    page.on("request", request)
    try:
        page.goto(url, wait_until="load")
        page.get_by_text(wait_for, exact=False).first.wait_for(timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shot), full_page=False)
        text = page.inner_text("body")
    finally:
        page.close()
    assert not errors, errors
    assert not elsewhere, f"requests to other hosts: {elsewhere}"
    assert shot.stat().st_size > 5000
    return text


def test_the_swagger_ui_of_a_real_server(browser, served, tmp_path):
    text = opened(browser, f"{served.url}/", tmp_path / "swagger.png", wait_for="/predict")
    assert "loopline prediction API" in text and "/feedback" in text
    assert "digits-classifier" in text


def test_the_evaluation_report(browser, served, tmp_path):
    report = served.settings.home.parent / "v1" / "eval" / "report.html"
    text = opened(browser, report.as_uri(), tmp_path / "evaluation.png", wait_for="accuracy")
    assert "held-out test samples" in text and "macro_recall" in text


def test_the_validation_report_and_its_data_summary(browser, digits_dir, tmp_path):
    out = tmp_path / "validation"
    done = validate_step(digits_dir, out, run_id="browser", config=ValidationConfig(10, 0.1))
    paths = done["reports"]
    text = opened(browser, Path(paths["html"]).as_uri(), tmp_path / "validation.png", wait_for="pass")  # fmt: skip
    assert "class_balance" in text or "duplicates" in text, text[:500]
    opened(browser, Path(paths["data_summary"]).as_uri(), tmp_path / "summary.png", wait_for="px_1")  # fmt: skip


def test_a_drift_report(browser, tmp_path):
    moved = judge(table(1000, 0), table(600, 2, shifted=True))
    report = tmp_path / "drift.html"
    moved.snapshot.save_html(str(report))
    text = opened(browser, report.as_uri(), tmp_path / "drift.png", wait_for="region")
    assert "Drift" in text or "drift" in text


def test_the_component_catalog_page(browser, tmp_path):
    from loopline.catalog import page

    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    catalog = Catalog(open_database(settings, migrate=True))
    publish(catalog, "1.0.0", VALUES, changelog="the first")
    catalog.record_uses("/p/pipe.catalog.lock", {"normalize": "1.0.0"})
    written = page.write(catalog, tmp_path / "index.html")
    text = opened(browser, written.as_uri(), tmp_path / "catalog.png", wait_for="normalize")
    assert "1.0.0" in text and "pipe.catalog.lock" in text
