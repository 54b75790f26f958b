"""loopline's model server: one BentoML service, with the model in its process.

``Predictor`` owns the HTTP contract (KServe v1 ``/predict``), checks the API key,
validates every request against the model's recorded schema, runs the champion, writes
the prediction log and answers with an envelope (model version, request id). The rows of
concurrent requests share forward passes (:mod:`loopline.serving.batcher`). BentoML's batchable
APIs must return one item per input, so the envelope would need a second service, and the
hop to it (serialization, a second HTTP stack, a fixed batching wait) cost more than the
model itself; batching in the process keeps one hop.

Run it with ``loopline serve``, or ``bentoml serve loopline.serving.service:Predictor``.

``bentoml serve``'s arbiter imports this module too, for the service's definition alone.
So the worker's parts (the champion and its engines, the stores and SQLAlchemy) are
imported where a worker starts them, not here: they cost the arbiter 1.8 s of CPU a
start (benchmarks/README.md, ``serve_start``); ``tests/serving/test_start_imports.py``
keeps them out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import re
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import ClientDisconnect
from starlette.routing import request_response
from starlette.types import ASGIApp

from loopline.core import processes
from loopline.core.errors import LooplineError
from loopline.core.settings import Settings, load_settings
from loopline.serving.auth import HEADER, ApiKey, LabelKeys, load_api_key, load_label_keys
from loopline.serving.batcher import Batcher
from loopline.serving.connections import drain_on_sigterm
from loopline.serving.connections import install as guard_connections
from loopline.serving.labels import MAX_ITEM, parse_labels
from loopline.serving.metrics import ServingMetrics, allocate_files
from loopline.serving.page import document, page
from loopline.serving.requests import JSON, PNG, Limits, RequestError, media_type
from loopline.serving.restarts import Restarts, check_workers_promptly
from loopline.serving.tracing import bentoml_tracing

if TYPE_CHECKING:
    from loopline.serving.champion import ServedModel
    from loopline.storage.feedback import FeedbackStore
    from loopline.storage.predictions import Answer, PredictionLog

log = logging.getLogger("loopline.serving")
# BentoML fixes the worker count when the class is defined, so the serve settings are
# read at import; `loopline serve` sets LOOPLINE_SERVE_* for its child.
OPTIONS = load_settings().serve
guard_connections(OPTIONS)
check_workers_promptly()  # in the arbiter: a dead worker is replaced within a second
allocate_files()  # a full disk is an error a metric survives, not a SIGBUS
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DECODERS = 2
PNG_BUDGET_S = 2.0


class _API(FastAPI):
    """FastAPI for the OpenAPI document (BentoML publishes a mounted FastAPI app's routes
    at ``/docs.json``). The POST routes registered with :meth:`direct` answer without
    FastAPI's middleware stack and dependency solving: the handlers take the bare request
    and catch their own errors. In a py-spy profile at concurrency 8, those layers took
    about a tenth of the server's busy time (benchmarks/README.md)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._direct: dict[str, ASGIApp] = {}

    def direct(self, path: str, **openapi):
        def register(endpoint):
            self.post(path, **openapi)(endpoint)  # documented like any route
            self._direct[path] = request_response(endpoint)
            return endpoint

        return register

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._direct.get(scope["path"])
            if handler is not None:
                return await handler(scope, receive, send)
        await super().__call__(scope, receive, send)


api = _API(title="loopline prediction API", docs_url=None, redoc_url=None)


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a worker needs from outside before it answers: its keys and the database."""

    key: ApiKey
    labellers: LabelKeys
    log: PredictionLog
    feedback: FeedbackStore

    @classmethod
    def open(cls, settings: Settings) -> Parts:
        from loopline.storage.database import open_database
        from loopline.storage.feedback import FeedbackStore
        from loopline.storage.predictions import PredictionLog

        key, labellers = load_api_key(settings.serve), load_label_keys(settings.labels)
        database = open_database(settings, migrate=True)
        return cls(
            key,
            labellers,
            PredictionLog(database),
            FeedbackStore(database, settings.labels.conflicts),
        )


class Unavailable(LooplineError):
    """The model server has no model to answer with (yet)."""


class Overloaded(LooplineError):
    """The queue ahead of a request would take longer than the server lets one wait."""

    def __init__(self, backlog_s: float):
        super().__init__(
            f"the server is busy: the queue ahead would take about {backlog_s:.1f} s "
            f"(over LOOPLINE_SERVE_MAX_QUEUE_S={OPTIONS.max_queue_s:g}); retry after the "
            "Retry-After header's seconds"
        )
        self.retry_after = str(max(1, math.ceil(backlog_s)))


@bentoml.service(
    name="loopline",
    workers=OPTIONS.api_workers,
    traffic={"timeout": 60},
    tracing=bentoml_tracing(OPTIONS),
)
@bentoml.asgi_app(api, path="/")
class Predictor:
    def __init__(self) -> None:
        import torch

        from loopline.serving.champion import ChampionHolder

        _die_with_the_server()
        drain_on_sigterm()
        settings = load_settings()
        self.restarts = Restarts.record(settings.home, OPTIONS.api_workers)
        self.limits = Limits(max_bytes=OPTIONS.max_bytes, max_instances=OPTIONS.max_instances)
        # PNG decoding is CPU work: off the event loop, a few at a time, each on a budget.
        self.decoder = ThreadPoolExecutor(DECODERS, thread_name_prefix="png")
        self.model_name = settings.model_name
        self.metrics = ServingMetrics(settings.model_name)
        self.holder = ChampionHolder(
            settings, pinned=OPTIONS.version, poll_s=OPTIONS.poll_s, on_load=self.metrics.serving
        )
        self.batcher = Batcher(OPTIONS.max_batch, batching=OPTIONS.batching)
        torch.set_num_threads(OPTIONS.threads)
        self.parts: Parts | None = None  # what the worker needs from outside; see _open
        self.problem = "the server is starting"
        self._closing = threading.Event()
        if self.restarts.exhausted:
            self.problem = "the server is stopping: its workers keep dying"
            self.restarts.give_up()
        else:
            threading.Thread(target=self._open, args=(settings,), name="open", daemon=True).start()

    def _open(self, settings) -> None:
        """Open the keys and the database, retried until they come, then follow the champion.

        A worker whose start fails is restarted by the arbiter; one that cannot start (the
        database down, a key file gone) would restart forever while clients hang. This one
        serves 503 naming the problem meanwhile, and becomes ready once it is fixed."""
        if self.restarts.backoff_s:
            self.problem = (
                f"the server's workers died {self.restarts.recent} time(s) recently; this one "
                f"loads in {self.restarts.backoff_s:.0f} s"
            )
            if self._closing.wait(self.restarts.backoff_s):
                return
        wait = 1.0
        while not self._closing.is_set():
            try:
                self.parts = Parts.open(settings)
                break
            except Exception as exc:  # noqa: BLE001 - any cause: named in every 503
                self.problem = f"the server cannot start: {exc}"
                log.warning("%s; retrying in %.0f s", self.problem, wait)
                self._closing.wait(wait)
                wait = min(wait * 2, 30.0)
        self.holder.start()

    def __is_ready__(self) -> bool:
        return self.parts is not None and self.holder.current is not None

    @bentoml.on_shutdown
    def close(self) -> None:
        self._closing.set()
        self.holder.stop()
        if self.parts is not None:
            self.parts.log.close()  # commits whatever is still queued
        self.batcher.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    async def answer(self, request: Request) -> JSONResponse:
        offered = request.headers.get("x-request-id")  # an empty one is a bad one
        request_id = offered if offered is not None else uuid.uuid4().hex
        headers = {"X-Request-ID": request_id}
        parts = self.parts
        if parts is None:  # no key known yet: nobody is let through
            return _error(503, f"{self.problem}; retry once /readyz answers 200", headers)
        if not parts.key.allows(request.headers.get(HEADER)):
            return _unauthorized(headers)
        from loopline.storage.predictions import Answer  # imported by Parts.open: 1 µs

        try:
            if offered is not None and not REQUEST_ID.fullmatch(offered):
                raise RequestError(400, f"X-Request-ID must match {REQUEST_ID.pattern}")
            body = await _read_body(request, self.limits.max_bytes)
            backlog = self.batcher.backlog_s()
            if backlog > OPTIONS.max_queue_s:
                raise Overloaded(backlog)
            model = self._model()  # validate and predict with the same one, even mid-switch
            rows = await self._rows(body, request.headers.get("content-type"), model)
            outputs = await self.batcher.predict(model, rows)
            answer = Answer(
                request_id,
                outputs.model_version,
                model.logged_inputs(rows),
                outputs.labels,
                outputs.probabilities,
            )
        except RequestError as exc:
            return _error(exc.status, str(exc), headers)
        except Overloaded as exc:
            return _error(429, str(exc), {**headers, "Retry-After": exc.retry_after})
        except Unavailable as exc:
            return _error(503, f"{exc}; retry once /readyz answers 200", headers)
        except Exception:
            log.exception("prediction %s failed", request_id)
            return _error(500, f"internal error; the server log has request {request_id}", headers)
        try:  # answer only once the log has it: a response the client saw is never lost
            logged = await parts.log.record(answer)
        except Exception:
            log.exception("prediction log write for %s failed", request_id)
            return _error(503, "the prediction log cannot record predictions; retry later", headers)
        if logged.outcome != "new":  # a reused id: the log kept the first answer
            return self._again(logged.stored, answer, model, headers)
        self.metrics.predicted(answer.model_version, answer.labels)
        return _envelope(answer, model, headers)

    def _again(
        self, stored: Answer, answer: Answer, model: ServedModel, headers: dict
    ) -> JSONResponse:
        """A reused request id: the stored answer again when the inputs are the same (an
        idempotent retry), 409 when they differ. Either way the log is unchanged."""
        if stored.digest != answer.digest:
            return _error(
                409,
                f"request id {stored.request_id} was already used with other inputs; send a "
                "new X-Request-ID (or none) for a new request",
                headers,
            )
        return _envelope(stored, model, {**headers, "X-Idempotent-Replay": "true"})

    def _model(self) -> ServedModel:
        current = self.holder.current
        if current is None:
            raise Unavailable(self.holder.problem or "no model loaded")
        return current

    async def _rows(self, body: bytes, content_type: str | None, model: ServedModel):
        if media_type(content_type) != PNG:
            return model.parse(body, content_type, self.limits)
        decoding = asyncio.get_running_loop().run_in_executor(
            self.decoder, model.parse, body, content_type, self.limits
        )
        try:
            return await asyncio.wait_for(decoding, PNG_BUDGET_S)
        except TimeoutError:
            raise RequestError(
                413, f"the image took over {PNG_BUDGET_S:g} s to decode; send a smaller PNG"
            ) from None

    async def attach_feedback(self, request: Request) -> JSONResponse:
        parts = self.parts
        if parts is None:
            return _error(503, f"{self.problem}; retry once /readyz answers 200", {})
        if not parts.labellers.enabled:
            return _error(403, LABELLING_CLOSED, {})
        source = parts.labellers.source(request.headers.get(HEADER))
        if source is None:
            return _error(401, f"missing or wrong labelling key; send it in {HEADER}", {})
        try:
            body = await _read_body(request, self.limits.max_bytes)
            parsed = parse_labels(body, request.headers.get("content-type"), self.limits)
            labels = [dataclasses.replace(label, source=source) for label in parsed]
            self._model().check_labels(labels)
            result = await asyncio.to_thread(parts.feedback.attach, labels)
        except RequestError as exc:
            return _error(exc.status, str(exc), {})
        except Unavailable as exc:
            return _error(503, f"{exc}; retry once /readyz answers 200", {})
        except Exception:
            log.exception("feedback failed")
            return _error(500, "internal error; the server log has the details", {})
        return JSONResponse(result)


LABELLING_CLOSED = (
    "labelling is closed: no labelling key is configured; set LOOPLINE_LABEL_KEYS "
    "(NAME=KEY) on the server and send the key in X-API-Key"
)
ERRORS = {
    400: "Unreadable body or header: bad JSON, an empty body, a bad X-Request-ID",
    401: "Missing or wrong key (X-API-Key): the API key to predict, a labelling key to label",
    403: "Labelling is closed: no labelling key is configured (LOOPLINE_LABEL_KEYS)",
    409: "The X-Request-ID was already used with other inputs",
    408: "The body did not arrive within LOOPLINE_SERVE_BODY_TIMEOUT_S",
    413: "Too large: body bytes, instances, image pixels, or an image too slow to decode",
    415: "Unsupported Content-Type",
    422: "Well-formed but wrong: shape, type, range, nesting, unknown fields or classes",
    429: "Busy: the queue ahead is over LOOPLINE_SERVE_MAX_QUEUE_S; retry after Retry-After",
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
VALUE = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
INSTANCE = {  # flat, or nested to the input shape (up to 3 levels), or column -> value
    "anyOf": [
        NUMBERS,
        {"type": "array", "items": NUMBERS},
        {"type": "array", "items": {"type": "array", "items": NUMBERS}},
        {"type": "array", "items": VALUE},  # a model with named columns, in their order
        {"type": "object", "additionalProperties": VALUE},
    ]
}
ENVELOPE = {
    "type": "object",
    "required": ["predictions", "model_version", "request_id"],
    "properties": {
        "predictions": {"type": "array", "items": {"type": "object"}},
        "model_version": {"type": "string"},
        "request_id": {"type": "string"},
        "classes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "A classifier's classes: the order of each prediction's probabilities",
        },
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
                    "request_id": {"type": "string", "minLength": 1},
                    "item": {"type": "integer", "minimum": 0, "maximum": MAX_ITEM},
                    # a class name; a number is taken as its text ("3")
                    "label": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
                },
            },
        }
    },
}
ATTACHED = {
    "type": "object",
    "properties": {
        "stored": {"type": "integer", "description": "Items labelled for the first time"},
        "repeated": {"type": "integer", "description": "The same label again"},
        "conflicts": {
            "type": "integer",
            "description": "A different label for an item already labelled: kept, not applied",
        },
        "unknown": {"type": "array", "items": {"type": "string"}},
        "unknown_count": {"type": "integer"},
    },
}


@api.direct(
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
        "responses": _responses(ENVELOPE, 400, 401, 408, 409, 413, 415, 422, 429, 500, 503),
    },
)
async def predict(request: Request) -> JSONResponse:
    service: Predictor = bentoml.get_current_service()
    return await service.metrics.timed("predict", service.answer(request))


@api.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    """loopline's own Swagger UI page (serving/page.py), not BentoML's stock one."""
    service: Predictor = bentoml.get_current_service()
    current = service.holder.current
    return HTMLResponse(page(service.model_name, current.version if current else None))


@api.get("/docs.json", include_in_schema=False)
async def openapi_document() -> JSONResponse:
    service: Predictor = bentoml.get_current_service()
    spec = Predictor.openapi_spec.asdict()
    return JSONResponse(document(spec, service.model_name, service.holder.current))


def _die_with_the_server() -> None:
    """A worker runs in a process group of its own: make the kernel stop it (SIGTERM, so
    the log is flushed) when the server process that started it dies, even by kill -9."""
    parent = os.getppid()
    processes.die_with_parent()
    if os.getppid() != parent:  # the server died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@api.direct(
    "/feedback",
    summary="Attach ground-truth labels to served predictions",
    openapi_extra={
        "parameters": HEADERS[:1],
        "requestBody": {"required": True, "content": {JSON: {"schema": LABELS_BODY}}},
        "responses": _responses(ATTACHED, 400, 401, 403, 408, 413, 415, 422, 500, 503),
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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or its body was too slow (connections.py)
        raise RequestError(408, "the body did not arrive whole in time") from None
    return b"".join(chunks)


def _envelope(answer: Answer, model: ServedModel, headers: dict[str, str]) -> JSONResponse:
    predictions = [
        model.prediction(label, probabilities)
        for label, probabilities in zip(answer.labels, answer.probabilities, strict=True)
    ]
    body = {
        "predictions": predictions,
        "model_version": answer.model_version,
        "request_id": answer.request_id,
    }
    if model.classes:  # the order of each prediction's probabilities
        body["classes"] = model.classes
    return JSONResponse(body, headers=headers)


def _unauthorized(headers: dict[str, str]) -> JSONResponse:
    return _error(401, f"missing or wrong API key; send it in the {HEADER} header", headers)


def _error(status: int, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
