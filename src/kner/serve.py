"""``kner serve``: an HTTP API and a web page over one or more trained models.

Each model is loaded once. ``predict`` is CPU-bound and a tagger is not promised to be
thread-safe (a CRF tagger object, a torch module with per-call buffers), so every call runs in
the threadpool while holding that model's own lock: requests to different models run in
parallel, requests to the same model queue, and the event loop stays free to accept connections.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from . import __version__
from .align import to_markup
from .models import Tagger, get, load, read_meta

WEB_DIR = Path(__file__).with_name("web")
DEFAULT_MAX_CHARS = 5000
DEFAULT_MAX_BATCH = 64


@dataclass
class LoadedModel:
    """A tagger ready to serve, with what ``GET /models`` says about it."""

    name: str
    tagger: Tagger
    meta: dict = field(default_factory=dict)
    run_dir: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, texts: list[str]) -> tuple[list, float]:
        """Spans for ``texts`` and the milliseconds the model itself took (queueing excluded)."""
        with self.lock:
            start = time.perf_counter()
            spans = self.tagger.predict(texts)
            return spans, (time.perf_counter() - start) * 1000


BACKENDS = ("torch", "onnx")


def _load(path: Path, backend: str, runtime: dict) -> Tagger:
    """A bert run through onnxruntime when asked (its ``kner export-onnx`` output), anything else natively.
    torch is the default: on a 2-core CPU onnxruntime was no faster (0.93x to 1.02x), with identical spans.
    ``runtime`` overrides apply where the model's family has the setting (a CRF has no precision)."""
    family = read_meta(path)["family"]
    runtime = get(family).runtime_overrides(runtime)
    if backend == "onnx" and family == "bert":
        from .onnx_backend import load_onnx

        return load_onnx(path, **runtime)
    return load(path, **runtime)


def load_models(run_dirs: Sequence[str | Path], backend: str = "torch", runtime: dict | None = None) -> list[LoadedModel]:
    """Load each run directory once; a model is named after its folder (``crf``, ``crf-2`` if two share a name).
    ``backend`` applies to bert runs: ``torch`` or ``onnx`` (needs ``kner export-onnx`` first); ``runtime``
    (e.g. ``{"precision": "bf16"}``) to each model whose family has the setting."""
    if not run_dirs:
        raise ValueError("give at least one run directory written by 'kner train'")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    loaded, taken = [], set()
    for run_dir in run_dirs:
        path = Path(run_dir).resolve()
        name, n = path.name or "model", 2
        while name in taken:
            name, n = f"{path.name}-{n}", n + 1
        taken.add(name)
        tagger = _load(path, backend, runtime or {})
        tagger.predict(["서울에서 warm-up."])  # lazy start-up (Kiwi, torch kernels) stays out of the first request
        loaded.append(LoadedModel(name=name, tagger=tagger, meta=read_meta(path), run_dir=str(path)))
    return loaded


# --- request and response schemas (they are what /openapi.json documents) -------------------
class PredictRequest(BaseModel):
    """Texts to tag: exactly one of ``text`` and ``texts``; models: ``model``, ``models`` or (neither) all."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "이순신 장군은 조선 시대의 명장이다."}]})

    text: str | None = Field(None, description="one text to tag")
    texts: list[str] | None = Field(None, description="several texts to tag, answered in order")
    model: str | None = Field(None, description="the one model to ask (a name from GET /models)")
    models: list[str] | None = Field(None, min_length=1,
                                     description="the models to ask; every loaded model when neither this nor `model` is given")

    @model_validator(mode="after")
    def _one_of_each(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) and 'texts' (a list of strings)")
        if self.model is not None and self.models is not None:
            raise ValueError("give 'model' or 'models', not both")
        return self


class SpanOut(BaseModel):
    start: int = Field(description="first character, counted from 0")
    end: int = Field(description="one past the last character (half-open, like Python slices)")
    label: str = Field(description="entity type: PS LC OG DT TI QT")
    text: str = Field(description="the entity's surface, text[start:end]")


class TextResult(BaseModel):
    text: str
    spans: list[SpanOut]
    markup: str = Field(description="the text with entities inline as <surface:LABEL>; literal \\ < > are backslash-escaped")


class ModelResult(BaseModel):
    model: str
    family: str
    latency_ms: float = Field(description="milliseconds this model spent on the whole request (queueing excluded)")
    results: list[TextResult] = Field(description="one per input text, in input order")


class PredictResponse(BaseModel):
    models: list[ModelResult]


class ModelInfo(BaseModel):
    name: str
    family: str
    dev_f1: float | None = Field(description="micro F1 on KLUE dev recorded at training time (kner.json)")
    n_train: int | None = Field(None, description="training sentences, when recorded")
    backend: str = Field(description="runtime of the network: onnx (onnxruntime) or native (the family's own)")
    labels: list[str]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    max_chars: int = Field(description="longest text accepted, in characters")
    max_batch: int = Field(description="most texts accepted in one request")


class Health(BaseModel):
    status: str
    models: int
    version: str


class ErrorOut(BaseModel):
    detail: str


def create_app(models: Sequence[LoadedModel], max_chars: int = DEFAULT_MAX_CHARS,
               max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The ASGI app serving ``models``: ``/predict``, ``/models``, ``/health`` and the page at ``/``."""
    if not models:
        raise ValueError("create_app needs at least one loaded model")
    if max_chars < 1 or max_batch < 1:
        raise ValueError(f"max_chars and max_batch must be at least 1, got {max_chars} and {max_batch}")
    by_name = {m.name: m for m in models}
    # A body can be no larger than a full batch of maximal texts (4 UTF-8 bytes, or 6 as JSON escapes) plus room.
    max_body = max_batch * (max_chars * 6 + 64) + 4096
    app = FastAPI(title="kner", version=__version__,
                  description="Korean named-entity recognition (KLUE NER types PS LC OG DT TI QT).")
    errors = {404: {"model": ErrorOut, "description": "unknown model name"},
              413: {"model": ErrorOut, "description": "a text or the batch is over the server's limits"}}

    @app.middleware("http")
    async def _body_limit(request: Request, call_next):
        # Refuse an oversized body before it is read and parsed.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            return JSONResponse({"detail": f"request body of {length} bytes is over the limit of {max_body}"},
                                status_code=413)
        return await call_next(request)

    async def answer(texts: list[str], wanted: list[str] | None) -> PredictResponse:
        if len(texts) > max_batch:
            raise HTTPException(413, f"{len(texts)} texts is over the limit of {max_batch} per request; "
                                     "send them in smaller batches")
        for i, text in enumerate(texts):
            if len(text) > max_chars:
                raise HTTPException(413, f"text {i} has {len(text)} characters, over the limit of {max_chars}; "
                                         "split it into shorter texts")
        unknown = [n for n in wanted or [] if n not in by_name]
        if unknown:
            raise HTTPException(404, f"unknown model {unknown[0]!r}; loaded models: {', '.join(by_name)}")
        chosen = [by_name[n] for n in dict.fromkeys(wanted)] if wanted else list(models)
        outputs = await asyncio.gather(*(run_in_threadpool(m.predict, texts) for m in chosen))
        return PredictResponse(models=[
            ModelResult(model=m.name, family=m.tagger.family, latency_ms=round(ms, 3), results=[
                TextResult(text=t, spans=[SpanOut(**s.to_dict(t)) for s in spans], markup=to_markup(t, spans))
                for t, spans in zip(texts, per_text)])
            for m, (per_text, ms) in zip(chosen, outputs)])

    @app.post("/predict", response_model=PredictResponse, responses=errors, summary="Tag texts")
    async def predict(body: PredictRequest) -> PredictResponse:
        texts = [body.text] if body.text is not None else body.texts
        return await answer(texts, [body.model] if body.model is not None else body.models)

    @app.get("/predict", response_model=PredictResponse, responses=errors,
             summary="Tag one text (a shareable link to the raw JSON)")
    async def predict_get(text: str = Query(description="the text to tag"),
                          model: list[str] | None = Query(None, description="model names; all when absent")
                          ) -> PredictResponse:
        return await answer([text], model)

    @app.get("/models", response_model=ModelsResponse, summary="The loaded models")
    async def list_models() -> ModelsResponse:
        return ModelsResponse(max_chars=max_chars, max_batch=max_batch, models=[
            ModelInfo(name=m.name, family=m.tagger.family, dev_f1=m.meta.get("metrics", {}).get("f1"),
                      n_train=m.meta.get("metrics", {}).get("n_train"), labels=list(m.tagger.labels),
                      backend=getattr(m.tagger, "backend", "native"))
            for m in models])

    @app.get("/health", response_model=Health, summary="Liveness")
    async def health() -> Health:
        return Health(status="ok", models=len(models), version=__version__)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        # The page loads nothing from elsewhere; the policy keeps it that way even if a text slipped into markup.
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    return app


def serve(run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000,
          max_chars: int = DEFAULT_MAX_CHARS, max_batch: int = DEFAULT_MAX_BATCH, backend: str = "torch",
          runtime: dict | None = None) -> None:
    """Load the models and serve them with uvicorn until interrupted."""
    import uvicorn

    models = load_models(run_dirs, backend, runtime)
    for m in models:
        print(f"loaded {m.name} ({m.tagger.family}, {getattr(m.tagger, 'backend', 'native')}) from {m.run_dir}",
              flush=True)
    uvicorn.run(create_app(models, max_chars=max_chars, max_batch=max_batch), host=host, port=port)
