"""`finetune serve`: the model over HTTP, in the Hugging Face Inference API's
text-classification format, so Hugging Face's own clients work against it unchanged.

    POST /predict   {"inputs": str | [str], "parameters": {"top_k", "function_to_apply"}}
                    -> one list of {"label", "score"} per input, best first; a sentence
                    pair is {"text": str, "text_pair": str} in place of a str
    GET  /health    200 once the model is loaded
    GET  /metadata  model folder, labels, max_length, truncation, backend, commit, its
                    eval metrics, and drift of recent predictions against validation
    GET  /metrics   Prometheus' text format (telemetry.py)
    GET  /docs      OpenAPI documentation

Concurrent requests share forward passes (batcher.py). Over a limit, a request gets 413
with a JSON body naming the limit; a malformed one gets 422; neither reaches the model.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from finetuning.errors import StageError
from finetuning.inference.batcher import MicroBatcher
from finetuning.inference.predictor import Predictor, ranked, transform
from finetuning.inference.telemetry import DriftWatch, Telemetry
from finetuning.provenance import git_state


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how requests are batched."""

    max_inputs: int = 64        # texts per request
    max_chars: int = 10_000     # characters per text
    max_batch: int = 32         # texts per forward pass
    max_wait_ms: float = 5.0    # how long a request waits for others to join its batch

    @property
    def max_body_bytes(self) -> int:
        """A request body no valid request exceeds (UTF-8 is at most 4 bytes a character)."""
        return 4 * self.max_inputs * (self.max_chars + 16) + 4096


class Parameters(BaseModel):
    """Hugging Face's text-classification parameters."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(None, ge=1, description="keep the k most probable labels")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="how logits become scores (default softmax)")


class TextPair(BaseModel):
    """Two texts classified together (entailment, paraphrase), as Hugging Face's
    text-classification API takes them."""

    model_config = ConfigDict(extra="forbid")
    text: StrictStr
    text_pair: StrictStr


Item = tuple[str, str | None]  # a text and its pair's second text, or None


class PredictRequest(BaseModel):
    """A request as Hugging Face's InferenceClient sends it."""

    inputs: StrictStr | TextPair | list[StrictStr | TextPair] = Field(
        description="one text or pair, or a list of them")
    parameters: Parameters | None = None

    def items(self) -> list[Item]:
        """The inputs as (text, text_pair or None), in order."""
        inputs = self.inputs if isinstance(self.inputs, list) else [self.inputs]
        return [(x, None) if isinstance(x, str) else (x.text, x.text_pair) for x in inputs]


class LabelScore(BaseModel):
    label: str
    score: float


class LimitExceeded(Exception):
    """A request over one of the Limits."""

    def __init__(self, limit: str, value: int, allowed: int):
        super().__init__(f"{limit} is {allowed}, the request has {value}")
        self.limit, self.value, self.allowed = limit, value, allowed


def check_limits(items: list[Item], limits: Limits) -> None:
    """Refuse a request with too many inputs or a text too long (413)."""
    if len(items) > limits.max_inputs:
        raise LimitExceeded("max_inputs", len(items), limits.max_inputs)
    longest = max((len(text or "") for item in items for text in item), default=0)
    if longest > limits.max_chars:
        raise LimitExceeded("max_chars", longest, limits.max_chars)


def metadata(predictor: Predictor, metrics_file: Path | None) -> dict:
    """What /metadata reports: the model, how it reads texts, where it came from."""
    scores = None
    if metrics_file is not None and metrics_file.is_file():
        scores = json.loads(metrics_file.read_text(encoding="utf-8"))
    commit = git_state([], cwd=predictor.folder)
    return {"model": str(predictor.folder.resolve()), "labels": predictor.labels,
            "max_length": predictor.max_length, "truncation": predictor.truncation.mode,
            "text_pair": predictor.truncation.pairs,
            "backend": predictor.backend.name,
            "commit": commit, "metrics": scores}


def create_app(predictor: Predictor, limits: Limits, metrics_file: Path | None = None,
               watch: DriftWatch = DriftWatch()) -> FastAPI:
    """The ASGI application around a loaded predictor."""
    telemetry = Telemetry(predictor.labels, predictor.reference, watch)

    def run_batch(items: list[Item]) -> np.ndarray:
        # Every item is of the model's kind (/predict checks): all pairs or all single.
        pairs = [pair for _, pair in items] if predictor.truncation.pairs else None
        scored = predictor.run([text for text, _ in items], pairs=pairs)
        telemetry.observe_batch(scored)
        return scored.logits

    batcher = MicroBatcher(run_batch, limits.max_batch, limits.max_wait_ms,
                           on_wait=telemetry.queue_wait.observe)
    info = metadata(predictor, metrics_file)

    def describe() -> dict:
        return {**info, "drift": telemetry.status()}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="finetune serve", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n")[0])
    add_routes(app, batcher, predictor, limits, describe)
    add_telemetry(app, telemetry)
    return app


def add_telemetry(app: FastAPI, telemetry: Telemetry) -> None:
    """/metrics, and every request counted and timed (added last, so it is the outermost
    middleware and also sees the requests the others refuse)."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(telemetry.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(CountRequests, telemetry=telemetry,
                       routes={route.path for route in app.routes})


class CountRequests:
    """ASGI middleware that counts and times each HTTP request by route and status; a
    path that is no route counts as "other", so clients cannot grow the label set. Plain
    ASGI rather than `@app.middleware`, which costs a task group per request."""

    def __init__(self, app, telemetry: Telemetry, routes: set[str]):
        self.app, self.telemetry, self.routes = app, telemetry, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # 500 unless a response starts

        async def send_noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.telemetry.observe_request(route, status, time.perf_counter() - started)


def add_routes(app: FastAPI, batcher: MicroBatcher, predictor: Predictor, limits: Limits,
               describe: Callable[[], dict]) -> None:
    """/predict, /health, /metadata, and the JSON body of a refused request."""

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_body_bytes:
            return limit_response(LimitExceeded("max_body_bytes", int(length),
                                                limits.max_body_bytes))
        return await call_next(request)

    @app.exception_handler(LimitExceeded)
    async def over_limit(request: Request, err: LimitExceeded) -> JSONResponse:
        return limit_response(err)

    @app.post("/predict", response_model=list[list[LabelScore]])
    async def predict(request: PredictRequest) -> list[list[dict]]:
        """Scores of each input's labels, best first (Hugging Face's format)."""
        items = request.items()
        check_limits(items, limits)
        if not items:
            return []
        try:
            predictor.check_pairs(items[0][1] is not None)
            if len({pair is None for _, pair in items}) > 1:
                raise StageError("a request mixes single texts and sentence pairs")
        except StageError as err:
            return JSONResponse(status_code=422, content={"error": str(err)})
        parameters = request.parameters or Parameters()
        scores = transform(await batcher.submit(items), parameters.function_to_apply or "softmax")
        return [ranked(row, predictor.labels, parameters.top_k) for row in scores]

    @app.get("/health")
    async def health() -> dict:
        """200 while the model is loaded and the batcher runs."""
        return {"status": "ok", "batches": batcher.batches, "texts": batcher.texts}

    @app.get("/metadata")
    async def model_metadata() -> dict:
        """The model folder, labels, truncation, backend, commit, eval metrics, drift."""
        return describe()


def limit_response(err: LimitExceeded) -> JSONResponse:
    """413 with the limit named."""
    return JSONResponse(status_code=413, content={
        "error": str(err), "limit": err.limit, "allowed": err.allowed, "value": err.value})
