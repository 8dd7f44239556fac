"""The HTTP service: ``create_app(translator)`` is a FastAPI app with the translation API, its docs at
``/docs`` and the attention viewer at ``/``; ``run_server(...)`` serves one with uvicorn.

Requests go through a micro-batcher (batching.py) that decodes in one worker thread, so the event
loop never waits for PyTorch. Every error is a JSON object ``{"error": code, "message": text}``.
"""

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attnmt import __version__
from attnmt.serve.batching import MicroBatcher, SearchOptions
from attnmt.serve.schemas import (
    ErrorResponse,
    ModelInfo,
    RequestLimits,
    TranslateResponse,
    result_of,
    translate_request_model,
)
from attnmt.translation import Translation

if TYPE_CHECKING:
    from attnmt.translation import TextTranslator

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeSettings:
    limits: RequestLimits = field(default_factory=RequestLimits)
    batching: bool = True  # gather concurrent requests into one decoding batch
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_batch_texts: int = 64  # sentences per batch
    timeout: float = 30.0  # seconds per request, queueing included; then 504


def error_response(status: int, code: str, message: str, details: list[dict] | None = None) -> JSONResponse:
    body = ErrorResponse(error=code, message=message, details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


class BodySizeLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets 413 before the app parses it.
    Checks the declared Content-Length and counts what actually arrives (chunked bodies declare none)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await error_response(413, "body_too_large", message)(scope, receive, send)


def _validation_message(errors: Sequence[dict[str, Any]]) -> str:
    """One line per problem, e.g. "beam: Input should be less than or equal to 16"."""
    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        lines.append(f"{where}: {str(error.get('msg', '')).removeprefix('Value error, ')}")
    return "; ".join(lines)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        details = [{key: e[key] for key in ("loc", "msg", "type") if key in e} for e in error.errors()]
        return error_response(422, "invalid_request", _validation_message(error.errors()), details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_")
        return error_response(error.status_code, code, str(error.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal_error", f"{type(error).__name__}: {error}")


def create_app(translator: "TextTranslator", settings: ServeSettings = ServeSettings(), model_name: str = "model") -> FastAPI:
    """The service for one loaded model. One function, longer than most, on purpose: FastAPI's route
    handlers are closures over the translator, the batcher and the settings, declared where the app is."""

    def decode(texts: Sequence[str], beam: int, n_best: int, length_penalty: float | None) -> list[list[Translation]]:
        return translator.translate_n_best(texts, beam=beam, n_best=n_best, length_penalty=length_penalty)

    batcher = MicroBatcher(decode, enabled=settings.batching, max_wait=settings.batch_wait_ms / 1000,
                           max_batch_texts=settings.max_batch_texts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(
        title="attnmt",
        version=__version__,
        description="Attention-based neural machine translation: translations with their attention matrices.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    config = translator.config
    can_run_deletion_test = callable(getattr(translator, "diagnose", None)) and translator.has_attention
    TranslateRequest = translate_request_model(settings.limits, config.decode.beam_size)
    errors = {status: {"model": ErrorResponse} for status in (413, 422, 504)}

    @app.post("/v1/translate", response_model=TranslateResponse, responses=errors)
    async def translate(request: TranslateRequest) -> TranslateResponse | JSONResponse:  # type: ignore[valid-type]
        """Translate one text or a list of texts; with `attention`, each translation carries its
        attention matrix at subword and at word level."""
        started = time.perf_counter()
        options = SearchOptions(beam=request.beam, length_penalty=request.length_penalty)
        try:
            found = await asyncio.wait_for(batcher.submit(request.texts, options, request.n_best), settings.timeout)
        except TimeoutError:
            return error_response(504, "timeout", f"no translation within {settings.timeout:g} s; "
                                                  "try fewer or shorter texts, or a smaller beam")
        tested: list = [None] * len(found)
        if request.deletion_test:
            if not can_run_deletion_test:
                return error_response(422, "deletion_test_unsupported", "the deletion test needs forced decoding "
                                      "of a PyTorch model with attention; this model is exported, or has no attention")
            try:  # in a worker thread, beside the batcher's: forced decoding only reads the model
                tested = await asyncio.wait_for(asyncio.to_thread(translator.diagnose, [n[0] for n in found]),
                                                settings.timeout)
            except TimeoutError:
                return error_response(504, "timeout", f"no deletion test within {settings.timeout:g} s; "
                                                      "try fewer or shorter texts")
        results = [result_of(text, n_best, request.attention, request.diagnostics or request.deletion_test, best)
                   for text, n_best, best in zip(request.texts, found, tested)]
        return TranslateResponse(results=results, beam=request.beam, n_best=request.n_best,
                                 elapsed_ms=round((time.perf_counter() - started) * 1000, 2))

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        """Languages, vocabulary sizes and configuration of the loaded model; the service's limits."""
        return ModelInfo(
            name=model_name,
            src_lang=config.data.src_lang,
            trg_lang=config.data.trg_lang,
            src_vocab_size=translator.src_tokenizer.vocab_size,
            trg_vocab_size=translator.trg_tokenizer.vocab_size,
            parameters=translator.num_parameters,
            attention=translator.attention_source,
            deletion_test=can_run_deletion_test,
            vocab=asdict(config.vocab),
            model=asdict(config.model),
            decode=asdict(config.decode),
            limits=asdict(settings.limits),
            batching={"enabled": settings.batching, "wait_ms": settings.batch_wait_ms,
                      "max_batch_texts": settings.max_batch_texts, "timeout_s": settings.timeout},
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and how many requests, batches and sentences the model has decoded."""
        return {"status": "ok", "decoded": batcher.stats.as_dict()}

    @app.get("/", include_in_schema=False)
    async def viewer() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def run_server(
    translator: "TextTranslator",
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings = ServeSettings(),
    access_log: bool = True,
) -> None:
    """Serve a loaded translator (a PyTorch ``Translator`` or an exported model's ``OnnxTranslator``)
    until interrupted."""
    import uvicorn

    app = create_app(translator, settings, model_name=model_name)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
