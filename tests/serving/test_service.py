"""The real BentoML server on loopback, driven by a real HTTP client."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from loopline.storage.registry import Registry
from tests.conftest import logged as read_log
from tests.serving.conftest import LABELLER, REVIEWER

pytestmark = pytest.mark.xdist_group("served")  # shares the session's server

DIGITS = load_digits()
ROWS = (DIGITS.data / 16.0).round(4)  # the dataset's [0, 1] scale


def post(url: str, payload=None, **kwargs) -> httpx.Response:
    if payload is not None:
        kwargs["json"] = payload
    return httpx.post(f"{url}/predict", timeout=30, **kwargs)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_readiness_waits_for_the_model(served):
    assert served.before_model["readyz"] == 503
    assert served.before_model["predict"] == 503
    assert "has no champion yet" in served.before_model["body"]["error"]
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_predictions_carry_version_and_request_id_and_are_logged(served):
    answer = post(served.url, {"instances": ROWS[:20].tolist()}, headers={"X-Request-ID": "rq-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "1" and body["request_id"] == "rq-1"
    labels = [int(p["label"]) for p in body["predictions"]]
    assert np.mean(np.array(labels) == DIGITS.target[:20]) >= 0.7
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-3 for p in body["predictions"])
    # Nested 1x8x8 instances are the same input as flat ones.
    nested = post(served.url, {"instances": [ROWS[0].reshape(1, 8, 8).tolist()]}).json()
    assert nested["predictions"][0] == body["predictions"][0]
    logged = read_log(served.settings)
    mine = logged[logged.request_id == "rq-1"]
    assert sorted(mine["item"]) == list(range(20))
    assert mine["label"].tolist() == [p["label"] for p in body["predictions"]]
    assert np.allclose(np.stack(mine["inputs"].map(np.asarray)), ROWS[:20], atol=1e-6)
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'loopline_predictions_total{label="0",model_version="1"}' in metrics


def test_metrics_count_requests_errors_latency_and_the_served_version(served):
    """The names the Grafana dashboard and the alert rules use (tests/infra checks them)."""

    def scrape() -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{served.url}/metrics").text
        return {
            sample.name + str(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    ok_key = "loopline_requests_total[('endpoint', 'predict'), ('status', '200')]"
    bad_key = "loopline_requests_total[('endpoint', 'predict'), ('status', '422')]"
    error_key = "loopline_request_errors_total[('endpoint', 'predict'), ('kind', 'client')]"
    latency_key = "loopline_request_duration_seconds_count[('endpoint', 'predict')]"
    before = scrape()
    assert post(served.url, {"instances": ROWS[:3].tolist()}).status_code == 200
    assert post(served.url, {"instances": [[1.0, 2.0]]}).status_code == 422
    after = scrape()
    assert after[ok_key] - before.get(ok_key, 0) == 1
    assert after[bad_key] - before.get(bad_key, 0) == 1
    assert after[error_key] - before.get(error_key, 0) == 1
    assert after[latency_key] - before.get(latency_key, 0) == 2
    served_version = "loopline_served_model_version[('model', 'digits-classifier')]"
    assert after[served_version] == 1.0


def test_an_idle_server_reports_a_promotion_and_a_rollback_within_a_poll(served, champion_v1):
    """The served version comes from the loaded model, not from the last request: with no
    request at all, /metrics follows the champion (else LooplineServingNotChampion fires
    on a healthy idle server)."""
    from prometheus_client.parser import text_string_to_metric_families

    def served_version() -> float | None:
        text = httpx.get(f"{served.url}/metrics").text
        found = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "loopline_served_model_version"
        ]
        return found[0] if found else None

    registry = Registry(served.settings)
    for version in ("2", "1"):  # a promotion, then a rollback; no prediction in between
        registry.promote(served.settings.model_name, version)
        deadline = time.monotonic() + 20  # the server polls every 0.5 s here
        while served_version() != float(version):
            assert time.monotonic() < deadline, f"still reports {served_version()}, not {version}"
            time.sleep(0.2)


def test_the_api_page_is_loopline_s_own_and_loads_nothing_from_another_host(served):
    """BentoML's stock page loaded Google Tag Manager; this one names loopline and the
    model, and every file it loads comes from the server itself."""
    import re
    from importlib import metadata

    page = httpx.get(f"{served.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    text = page.text
    assert "<title>loopline prediction API: digits-classifier v1</title>" in text
    assert "googletagmanager" not in text and "BentoML" not in text
    assert "validatorUrl: null" in text  # Swagger UI's online validator badge is off
    loaded = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert loaded and all(link.startswith("./") for link in loaded), loaded
    for link in loaded:
        assert httpx.get(f"{served.url}/{link[2:]}").status_code == 200, link
    document = httpx.get(f"{served.url}/docs.json").json()
    assert document["info"]["title"] == "loopline prediction API"
    assert document["info"]["version"] == metadata.version("loopline")
    assert "**digits-classifier**, version 1" in document["info"]["description"]
    # "Try it out" sends the documented example: the server answers it.
    example = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    answer = post(served.url, example["application/json"]["example"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["classes"] == [str(i) for i in range(10)]  # the probabilities' order


def test_png_upload_is_classified_like_the_array(served):
    image = DIGITS.images[0] / 16.0 * 255.0
    answer = post(served.url, content=png(image), headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    as_array = post(served.url, {"instances": [(image / 255.0).reshape(-1).tolist()]}).json()
    assert answer.json()["predictions"][0]["label"] == as_array["predictions"][0]["label"]


def _corpus() -> list[tuple[str, dict, int, str]]:
    good = ROWS[0].tolist()
    whole_png = png(DIGITS.images[0] / 16.0 * 255.0)
    as_json = {"Content-Type": "application/json"}
    return [
        ("wrong shape", {"json": {"instances": [good[:10]]}}, 422, "has 10 values; expected 64"),
        ("wrong nesting", {"json": {"instances": [[good]]}}, 422, "is nested as [1, 64]"),
        (
            "string for a number",
            {"json": {"instances": [["a"] * 64]}},
            422,
            "instances[0][0] is str",
        ),
        (
            "NaN",
            {"content": json.dumps({"instances": [[float("nan")] * 64]}), "headers": as_json},
            422,
            "NaN is not a number",
        ),
        (
            "inf",
            {"content": b'{"instances": [[Infinity' + b", 0" * 63 + b"]]}", "headers": as_json},
            422,
            "Infinity is not a number",
        ),
        (
            "out of range",
            {"json": {"instances": [[5.0] * 64]}},
            422,
            "expected a value in [0.0, 1.0]",
        ),
        ("empty body", {"content": b"", "headers": as_json}, 400, "body is empty"),
        ("not JSON", {"content": b'{"instances": [[0', "headers": as_json}, 400, "not valid JSON"),
        (
            "wrong content-type",
            {"content": b"1,2,3", "headers": {"Content-Type": "text/csv"}},
            415,
            "must be application/json",
        ),
        (
            "over the size limit",
            {"content": b"[" + b"0," * 600_000 + b"0]", "headers": as_json},
            413,
            "the limit is 1000000",
        ),
        ("too many instances", {"json": {"instances": [good] * 300}}, 413, "the limit is 256"),
        (
            "unknown field",
            {"json": {"instances": [good], "extra": 1}},
            422,
            "unknown field(s) extra",
        ),
        ("no instances", {"json": {"inputs": [good]}}, 422, 'must be an object {"instances"'),
        (
            "feature object for an image model",
            {"json": {"instances": [{"px_0": 1}]}},
            422,
            "must be a list of numbers",
        ),
        (
            "truncated PNG",
            {"content": whole_png[: len(whole_png) // 2], "headers": {"Content-Type": "image/png"}},
            400,
            "image data is truncated",
        ),
        (
            "not a PNG",
            {"content": b"GIF89a....", "headers": {"Content-Type": "image/png"}},
            400,
            "not a readable PNG",
        ),
        # The 500s: huge integers, deep nesting, ragged arrays.
        (
            "a 400-digit integer",
            {"content": b'{"instances": [[' + b"9" * 400 + b"]]}", "headers": as_json},
            422,
            "has 400 digits",
        ),
        (
            "a 5000-digit integer",
            {"content": b'{"instances": [[' + b"9" * 5000 + b"]]}", "headers": as_json},
            422,
            "has 5000 digits",
        ),
        (
            "a 300-character float",
            {"content": b'{"instances": [[0.' + b"1" * 300 + b"]]}", "headers": as_json},
            422,
            "written with 302 characters",
        ),
        (
            "nested 1,000 deep",
            {"content": b'{"instances": ' + b"[" * 1000 + b"]" * 1000 + b"}", "headers": as_json},
            422,
            "nests deeper than 32",
        ),
        (
            "nested 10,000 deep",
            {"content": b'{"instances": ' + b"[" * 10000 + b"]" * 10000 + b"}", "headers": as_json},
            422,
            "nests deeper than 32",
        ),
        (
            "ragged nesting",
            {"json": {"instances": [[[0.0] * 8] * 7 + [[0.0] * 9]]}},
            422,
            "instances[0]",
        ),
        (
            "a bad request id",
            {"json": {"instances": [good]}, "headers": {"X-Request-ID": "spaces are not ok"}},
            400,
            "X-Request-ID must match",
        ),
        (
            "a 1 x 16,000,000 PNG",
            {"content": png(np.zeros((1, 16_000_000))), "headers": {"Content-Type": "image/png"}},
            413,
            "4096 px a side",
        ),
    ]


@pytest.mark.parametrize(("case", "request_kwargs", "status", "says"), _corpus())
def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    served, case, request_kwargs, status, says
):
    answer = post(served.url, **request_kwargs)
    assert answer.status_code == status, (case, answer.text)
    error = answer.json()["error"]
    assert says in error, (case, error)
    assert "Traceback" not in answer.text
    assert post(served.url, {"instances": ROWS[:1].tolist()}).status_code == 200


def test_champion_switch_under_load_drops_no_request(served, champion_v1):
    results: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{served.url}/predict", json={"instances": ROWS[:4].tolist()})
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    results.append((time.monotonic(), r.status_code, version))
                except httpx.HTTPError as exc:
                    results.append((time.monotonic(), 0, repr(exc)))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    switched_at = time.monotonic()
    Registry(served.settings).promote(served.settings.model_name, "2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(v == "2" for _, _, v in results):
        time.sleep(0.2)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    assert {v for at, _, v in results if at < switched_at} == {"1"}
    last = sorted(results)[-20:]
    assert {v for _, _, v in last} == {"2"}, "responses carry the new version from then on"


def test_a_reused_request_id_replays_the_same_inputs_and_refuses_others(served):
    headers = {"X-Request-ID": "reuse-1"}
    first = post(served.url, {"instances": ROWS[:3].tolist()}, headers=headers)
    again = post(served.url, {"instances": ROWS[:3].tolist()}, headers=headers)
    other = post(served.url, {"instances": ROWS[3:6].tolist()}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["X-Idempotent-Replay"] == "true"
    assert other.status_code == 409 and "already used with other inputs" in other.json()["error"]
    # Every 200 matches the log: the inputs and outputs the client was given, once.
    logged = read_log(served.settings)
    mine = logged[logged.request_id == "reuse-1"].sort_values("item")
    assert mine["item"].tolist() == [0, 1, 2]
    assert mine["label"].tolist() == [p["label"] for p in first.json()["predictions"]]
    assert np.allclose(np.stack(mine["inputs"]), ROWS[:3], atol=1e-6)


def test_png_decoding_never_holds_other_clients(served):
    """Four large (allowed) PNGs at once; a JSON request sent with them is answered first."""
    big = png(np.full((4000, 4000), 128.0))  # small on the wire, 16 M pixels to decode
    finished: dict[str, float] = {}

    def send(name: str, **kwargs) -> None:
        response = post(served.url, **kwargs)
        assert response.status_code == 200, response.text
        finished[name] = time.monotonic()

    threads = [
        threading.Thread(
            target=send,
            args=(f"png-{i}",),
            kwargs={"content": big, "headers": {"Content-Type": "image/png"}},
        )
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    send("json", payload={"instances": ROWS[:1].tolist()})
    for thread in threads:
        thread.join()
    assert finished["json"] < max(v for k, v in finished.items() if k.startswith("png")), finished


def test_feedback_attaches_labels_to_logged_predictions_and_refuses_bad_ones(served):
    def label(**kwargs):
        return httpx.post(url, headers={**LABELLER, **kwargs.pop("headers", {})}, **kwargs)

    answer = post(served.url, {"instances": ROWS[:2].tolist()}, headers={"X-Request-ID": "fb-1"})
    assert answer.status_code == 200
    url = f"{served.url}/feedback"
    good = label(
        json={
            "labels": [
                {"request_id": "fb-1", "item": 1, "label": "1"},
                {"request_id": "nope", "label": "3"},
            ]
        },
    )
    assert good.status_code == 200, good.text
    assert good.json()["stored"] == 1 and good.json()["unknown"] == ["nope#0"]
    bad_class = label(json={"labels": [{"request_id": "fb-1", "label": "eleven"}]})
    assert (
        bad_class.status_code == 422 and "is not a class of the model" in bad_class.json()["error"]
    )
    not_json = label(content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    extra = label(json={"labels": [{"request_id": "fb-1", "label": "1", "x": 1}]})
    assert extra.status_code == 422 and "unknown field(s) x" in extra.json()["error"]
    # The same rules as /predict: content type, top-level fields, nesting.
    as_text = label(content=b'{"labels": []}', headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415, as_text.text
    top = label(json={"labels": [{"request_id": "fb-1", "label": "1"}], "why": 1})
    assert top.status_code == 422 and "only 'labels'" in top.json()["error"]
    deep = label(
        content=b'{"labels": ' + b"[" * 10000 + b"]" * 10000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert deep.status_code == 422 and "nests deeper" in deep.json()["error"]


def test_labels_need_a_labelling_key_record_their_source_and_never_overwrite(served):
    from loopline.storage.database import open_for_reading
    from loopline.storage.feedback import FeedbackStore

    answer = post(served.url, {"instances": ROWS[:1].tolist()}, headers={"X-Request-ID": "fb-2"})
    assert answer.status_code == 200
    url = f"{served.url}/feedback"
    body = {"labels": [{"request_id": "fb-2", "label": "3"}]}
    anonymous = httpx.post(url, json=body)
    wrong = httpx.post(url, json=body, headers={"X-API-Key": "test-labeller-kez"})
    assert anonymous.status_code == wrong.status_code == 401
    assert "labelling key" in anonymous.json()["error"]
    first = httpx.post(url, json=body, headers=LABELLER).json()
    again = httpx.post(url, json=body, headers=LABELLER).json()
    other = {"labels": [{"request_id": "fb-2", "label": "5"}]}
    conflict = httpx.post(url, json=other, headers=REVIEWER).json()
    assert (first["stored"], again["repeated"], conflict["conflicts"]) == (1, 1, 1)
    database = open_for_reading(served.settings)
    try:
        kept = FeedbackStore(database, "first").labelled()
        by_source = FeedbackStore(database).by_source()
        excluded = FeedbackStore(database).labelled()
    finally:
        database.close()
    row = kept[kept["request_id"] == "fb-2"].iloc[0]
    assert (row["label"], row["source"]) == ("3", "labeller")  # the first, not overwritten
    mine = by_source[by_source["request_id"] == "fb-2"]
    assert dict(zip(mine["source"], mine["label"], strict=True)) == {
        "labeller": "3",
        "reviewer": "5",
    }
    assert "fb-2" not in set(excluded["request_id"])  # in conflict: left out by default
