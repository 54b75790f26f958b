"""loopline's model server: two BentoML services in one graph.

``Predictor`` is the front door. It owns the HTTP contract (KServe v1 ``/predict``), checks
the API key, validates every request against the model's recorded schema, writes the
prediction log and answers with an envelope (model version, request id). ``ModelRunner``
holds the champion and has one batchable API, so BentoML's adaptive batching merges rows
from concurrent requests into one forward pass. The split follows BentoML's rule that a
batchable API returns exactly one item per input: the envelope cannot live there.

Run it with ``loopline serve``, or ``bentoml serve serving.service:Predictor``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from components import processes
from components.database import open_database
from components.dataset import DatasetSchema
from components.settings import load_settings
from serving.auth import HEADER, load_api_key
from serving.champion import ChampionHolder
from serving.feedback import FeedbackStore, parse_labels
from serving.metrics import ServingMetrics
from serving.options import load_options
from serving.prediction_log import Answer, PredictionLog, digest
from serving.requests import JSON, PNG, Limits, RequestError, media_type, parse

log = logging.getLogger("loopline.serving")
OPTIONS = load_options()
RUNNER_ATTEMPTS = 4
RUNNER_ATTEMPT_S = max(5.0, 3 * OPTIONS.max_latency_ms / 1000)  # well above a batch's wait
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DECODERS = 2
PNG_BUDGET_S = 2.0

api = FastAPI(title="loopline prediction API", docs_url=None, redoc_url=None)


@bentoml.service(name="loopline-model", workers=1, traffic={"timeout": 60})
class ModelRunner:
    """The champion model; follows the registry's alias while it runs."""

    def __init__(self) -> None:
        _die_with_the_server()
        self.holder = ChampionHolder(load_settings(), pinned=OPTIONS.version, poll_s=OPTIONS.poll_s)
        self.holder.start()

    def __is_ready__(self) -> bool:
        return self.holder.current is not None

    @bentoml.api(
        batchable=OPTIONS.batching,
        max_batch_size=OPTIONS.max_batch,
        max_latency_ms=OPTIONS.max_latency_ms,
    )
    def predict(self, rows: np.ndarray) -> list[dict]:
        current = self.holder.current  # one model for the whole batch, even mid-switch
        if current is None:
            raise ServiceUnavailable(self.holder.problem or "no model loaded")
        return current.predict(rows)

    @bentoml.api
    def describe(self) -> dict:
        current = self.holder.current
        return {
            "version": current.version if current else None,
            "schema": asdict(current.schema) if current else None,
            "problem": self.holder.problem,
        }

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        self.holder.stop()


class Unavailable(Exception):
    """The model server has no model to answer with (yet)."""


@bentoml.service(name="loopline", workers=OPTIONS.api_workers, traffic={"timeout": 60})
@bentoml.asgi_app(api, path="/")
class Predictor:
    runner = bentoml.depends(ModelRunner)

    def __init__(self) -> None:
        _die_with_the_server()
        settings = load_settings()
        database = open_database(settings, migrate=True)
        self.log = PredictionLog(database)
        self.feedback = FeedbackStore(database)
        self.key = load_api_key()
        self.limits = Limits(max_bytes=OPTIONS.max_bytes, max_instances=OPTIONS.max_instances)
        # PNG decoding is CPU work: off the event loop, a few at a time, each on a budget.
        self.decoder = ThreadPoolExecutor(DECODERS, thread_name_prefix="png")
        self.schema: tuple[str, DatasetSchema] | None = None  # (version, schema) of the model
        _keep_one_session(self.runner)
        self.metrics = ServingMetrics(settings.model_name)

    @bentoml.on_shutdown
    def close_log(self) -> None:
        self.log.close()  # commits whatever is still queued
        self.decoder.shutdown(wait=False, cancel_futures=True)

    async def answer(self, request: Request) -> JSONResponse:
        offered = request.headers.get("x-request-id")  # an empty one is a bad one
        request_id = offered if offered is not None else uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        if not self.key.allows(request.headers.get(HEADER)):
            return _unauthorized(headers)
        try:
            if offered is not None and not REQUEST_ID.fullmatch(offered):
                raise RequestError(400, f"X-Request-ID must match {REQUEST_ID.pattern}")
            body = await _read_body(request, self.limits.max_bytes)
            rows = await self._rows(body, request.headers.get("content-type"))
            outputs = await self._predict(rows)
            answer = Answer(
                request_id, outputs[0]["model_version"], rows,
                [o["label"] for o in outputs],
                np.asarray([o["probabilities"] for o in outputs], dtype=np.float64),
            )  # fmt: skip
        except RequestError as exc:
            return _error(exc.status, str(exc), headers)
        except Unavailable as exc:
            return _error(503, f"{exc}; retry once /readyz answers 200", headers)
        except Exception:
            log.exception("prediction %s failed", request_id)
            return _error(500, f"internal error; the server log has request {request_id}", headers)
        try:  # answer only once the log has it: a response the client saw is never lost
            logged = await asyncio.wrap_future(self.log.submit(answer))
        except Exception:
            log.exception("prediction log write for %s failed", request_id)
            return _error(503, "the prediction log cannot record predictions; retry later", headers)
        if logged.outcome != "new":  # a reused id: the log kept the first answer
            return self._again(logged.stored, rows, headers)
        self.metrics.predicted(answer.model_version, answer.labels)
        return _envelope(answer, headers)

    def _again(self, stored: Answer, rows: np.ndarray, headers: dict) -> JSONResponse:
        """A reused request id: the stored answer again when the inputs are the same (an
        idempotent retry), 409 when they differ. Either way the log is unchanged."""
        if stored.digest != digest(rows):
            return _error(
                409,
                f"request id {stored.request_id} was already used with other inputs; send a "
                "new X-Request-ID (or none) for a new request",
                headers,
            )
        return _envelope(stored, {**headers, "X-Idempotent-Replay": "true"})

    async def _rows(self, body: bytes, content_type: str | None) -> np.ndarray:
        schema = await self._schema()
        if media_type(content_type) != PNG:
            return parse(body, content_type, schema, self.limits)
        decoding = asyncio.get_running_loop().run_in_executor(
            self.decoder, parse, body, content_type, schema, self.limits
        )
        try:
            return await asyncio.wait_for(decoding, PNG_BUDGET_S)
        except TimeoutError:
            raise RequestError(
                413, f"the image took over {PNG_BUDGET_S:g} s to decode; send a smaller PNG"
            ) from None

    async def attach_feedback(self, request: Request) -> JSONResponse:
        if not self.key.allows(request.headers.get(HEADER)):
            return _unauthorized({})
        try:
            body = await _read_body(request, self.limits.max_bytes)
            labels = parse_labels(body, request.headers.get("content-type"), self.limits)
            classes = (await self._schema()).classes
            result = await asyncio.to_thread(self.feedback.attach, labels, classes)
        except RequestError as exc:
            return _error(exc.status, str(exc), {})
        except Unavailable as exc:
            return _error(503, f"{exc}; retry once /readyz answers 200", {})
        except Exception:
            log.exception("feedback failed")
            return _error(500, "internal error; the server log has the details", {})
        return JSONResponse(result)

    async def _schema(self) -> DatasetSchema:
        if self.schema is None:
            described = await self._call_runner("describe")
            if described["version"] is None:
                raise Unavailable(described["problem"] or "no model loaded")
            self.schema = (described["version"], DatasetSchema(**described["schema"]))
        return self.schema[1]

    async def _predict(self, rows: np.ndarray) -> list[dict]:
        """Outputs from one model version; a request split across a champion switch is
        answered again, so its envelope names the model that made every prediction."""
        for _ in range(3):
            outputs = await self._call_runner("predict", rows)
            versions = {o["model_version"] for o in outputs}
            if len(versions) == 1:
                if self.schema is not None and self.schema[0] != outputs[0]["model_version"]:
                    self.schema = None  # the champion moved; take its schema next time
                return outputs
        raise Unavailable("the champion kept changing during the request")

    async def _call_runner(self, method: str, *args):
        """Call the model service, retrying a dropped or stalled connection.

        BentoML 1.4's client may close its HTTP session under requests still in flight
        (see ``_keep_one_session``); those fail with a closed connection or never
        complete. A prediction is safe to repeat, so each attempt gets a deadline and a
        lost one is sent again.
        """
        for attempt in range(RUNNER_ATTEMPTS):
            try:
                call = getattr(self.runner.to_async, method)(*args)
                return await asyncio.wait_for(call, RUNNER_ATTEMPT_S)
            except (aiohttp.ClientConnectionError, RuntimeError, TimeoutError) as exc:
                # aiohttp reports a connection closed mid-response as a bare RuntimeError.
                lost = not isinstance(exc, RuntimeError) or "Connection closed" in str(exc)
                if not lost or attempt == RUNNER_ATTEMPTS - 1:
                    raise
                log.warning("model service call lost (%s); retrying", type(exc).__name__)


ERRORS = {
    400: "Unreadable body or header: bad JSON, an empty body, a bad X-Request-ID",
    401: "Missing or wrong API key (X-API-Key)",
    409: "The X-Request-ID was already used with other inputs",
    413: "Too large: body bytes, instances, image pixels, or an image too slow to decode",
    415: "Unsupported Content-Type",
    422: "Well-formed but wrong: shape, type, range, nesting, unknown fields or classes",
    500: "Unexpected server error (the body names the request id in the server log)",
    503: "No model loaded yet, or the prediction log cannot record; retry later",
}
ERROR_BODY = {
    JSON: {
        "schema": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        }
    }
}
HEADERS = [
    {"name": "X-API-Key", "in": "header", "required": False, "schema": {"type": "string"}},
    {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Reuse with the same inputs to replay the logged answer; other inputs get 409",
        "schema": {"type": "string", "pattern": f"^{REQUEST_ID.pattern}$"},
    },
]


def _responses(ok: dict, *codes: int) -> dict:
    return {
        "200": {"description": "OK", "content": {JSON: {"schema": ok}}},
        **{str(c): {"description": ERRORS[c], "content": ERROR_BODY} for c in codes},
    }


NUMBERS = {"type": "array", "items": {"type": "number"}}
INSTANCE = {  # flat, or nested to the input shape (up to 3 levels), or feature -> value
    "anyOf": [
        NUMBERS,
        {"type": "array", "items": NUMBERS},
        {"type": "array", "items": {"type": "array", "items": NUMBERS}},
        {"type": "object", "additionalProperties": {"type": "number"}},
    ]
}
ENVELOPE = {
    "type": "object",
    "required": ["predictions", "model_version", "request_id"],
    "properties": {
        "predictions": {"type": "array", "items": {"type": "object"}},
        "model_version": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
LABELS_BODY = {
    "type": "object",
    "required": ["labels"],
    "additionalProperties": False,
    "properties": {
        "labels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["request_id", "label"],
                "additionalProperties": False,
                "properties": {
                    "request_id": {"type": "string"},
                    "item": {"type": "integer", "minimum": 0},
                    "label": {"type": "string"},
                },
            },
        }
    },
}
ATTACHED = {
    "type": "object",
    "properties": {
        "stored": {"type": "integer"},
        "unknown": {"type": "array", "items": {"type": "string"}},
        "unknown_count": {"type": "integer"},
    },
}


@api.post(
    "/predict",
    summary="Predict the class of each instance (KServe v1)",
    openapi_extra={
        "parameters": HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["instances"],
                        "additionalProperties": False,
                        "properties": {
                            "instances": {"type": "array", "minItems": 1, "items": INSTANCE}
                        },
                    },
                    "example": {"instances": [[0.0] * 64]},
                },
                PNG: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": _responses(ENVELOPE, 400, 401, 409, 413, 415, 422, 500, 503),
    },
)
async def predict(request: Request) -> JSONResponse:
    service: Predictor = bentoml.get_current_service()
    return await service.metrics.timed("predict", service.answer(request))


def _die_with_the_server() -> None:
    """A worker runs in a process group of its own: make the kernel stop it (SIGTERM, so
    the log is flushed) when the server process that started it dies, even by kill -9."""
    parent = os.getppid()
    processes.die_with_parent()
    if os.getppid() != parent:  # the server died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _keep_one_session(proxy: object) -> None:
    """Stop BentoML's client from replacing its session every 100 requests.

    Since 1.4.31 the proxy to a dependency closes its aiohttp session after 100 requests
    or 300 s, while other requests are still in flight on it; under load about one
    request in ten then fails (bentoml/BentoML#5540 reports the same change). The model
    service is a local socket, so there is nothing to rebalance: keep one session.
    """
    manager = getattr(getattr(proxy, "_async", None), "_session_manager", None)
    if manager is not None and hasattr(manager, "max_requests"):
        manager.max_requests = sys.maxsize
        manager.max_age = float("inf")
    else:
        log.warning("BentoML's client changed; relying on retries for dropped calls")


@api.post(
    "/feedback",
    summary="Attach ground-truth labels to served predictions",
    openapi_extra={
        "parameters": HEADERS[:1],
        "requestBody": {"required": True, "content": {JSON: {"schema": LABELS_BODY}}},
        "responses": _responses(ATTACHED, 400, 401, 413, 415, 422, 500, 503),
    },
)
async def feedback(request: Request) -> JSONResponse:
    service: Predictor = bentoml.get_current_service()
    return await service.metrics.timed("feedback", service.attach_feedback(request))


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` rather than after reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _envelope(answer: Answer, headers: dict[str, str]) -> JSONResponse:
    predictions = [
        {"label": label, "probabilities": probabilities.tolist()}
        for label, probabilities in zip(answer.labels, answer.probabilities, strict=True)
    ]
    return JSONResponse(
        {"predictions": predictions, "model_version": answer.model_version,
         "request_id": answer.request_id},
        headers=headers,
    )  # fmt: skip


def _unauthorized(headers: dict[str, str]) -> JSONResponse:
    return _error(401, f"missing or wrong API key; send it in the {HEADER} header", headers)


def _error(status: int, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
