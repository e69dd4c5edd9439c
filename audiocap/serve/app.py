"""The HTTP service: a JSON API over one loaded model, and the web page at `/`.

    app = create_app(audiocap.load_model(), api_key="...")   # run with uvicorn (`audiocap serve`)

    POST /v1/caption   audio as the raw body or the multipart field `file`; beam_size, segment, n_best
    GET  /v1/health    GET /v1/model    GET /docs (OpenAPI)    GET / (the page)

Every refusal is JSON `{"error": "..."}` with a 4xx status naming the problem; a request never touches a
path the client chose (uploads go to files the server names in its own temporary folder, deleted when the
request ends, however it ends).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import shutil
import tempfile
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

import audiocap
from audiocap.errors import AudiocapError
from audiocap.serve.batcher import CaptionBatcher, QueueFull, limit_malloc_arenas
from audiocap.serve.model_info import describe_model
from audiocap.serve.uploads import (
    MAX_BEAM_SIZE, MIN_SEGMENT_SECONDS, CaptionOptions, RequestError, decode_upload, parse_options, receive_upload,
)
from audiocap.caption import CaptionResult, segment_bounds

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("audiocap.serve")

CAPTION_DOCS = {
    "parameters": [
        {"name": "beam_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE,
                                                        "default": 3}},
        {"name": "segment", "in": "query", "description": "seconds per window: one caption per window of a long "
         "recording", "schema": {"type": "number", "minimum": MIN_SEGMENT_SECONDS}},
        {"name": "n_best", "in": "query", "description": "captions returned per clip or window, best first "
         "(at most beam_size)", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    ],
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "beam_size": {"type": "integer"},
            "segment": {"type": "number"}, "n_best": {"type": "integer"}}}},
        "audio/*": {"schema": {"type": "string", "format": "binary"}},
    }},
}


def create_app(
    pipeline, model_path: str | Path | None = None, *, api_key: str | None = None,
    max_upload_bytes: int = 50_000_000, max_audio_seconds: float = 600.0, max_pending: int = 16,
    max_batch_clips: int = 8, collect_seconds: float = 0.02, request_timeout: float = 120.0,
) -> FastAPI:
    """The service for a loaded CaptioningPipeline (`model_path`: the file it came from, None = bundled).
    At most `max_pending` requests are in flight (uploading, decoding, waiting or being captioned); one more
    gets 503 with Retry-After. A request gets `request_timeout` seconds in all (504 after)."""
    limit_malloc_arenas()  # before the server's threads: see the function
    batcher = CaptionBatcher(pipeline, max_pending, max_batch_clips, collect_seconds)
    model = describe_model(pipeline, model_path)
    captions = CaptionRequests(pipeline, batcher, model["name"], max_upload_bytes, max_audio_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.upload_dir = tempfile.mkdtemp(prefix="audiocap-serve-")
        batcher.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(batcher.close)
            shutil.rmtree(app.state.upload_dir, ignore_errors=True)

    app = FastAPI(title="audiocap", version=audiocap.__version__, lifespan=lifespan,
                  description="Automated audio captioning: a recording in, a sentence out.")
    app.state.batcher = batcher
    add_error_handlers(app)

    def check_api_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise RequestError(401, "missing or wrong API key; send it in the X-API-Key header "
                                    "(or Authorization: Bearer KEY)")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])

    @v1.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model["name"], "pending": batcher.pending, "max_pending": max_pending,
                "batches": batcher.batches, "clips_captioned": batcher.clips}

    @v1.get("/model")
    def model_description() -> dict:
        return {**model, "limits": {"max_upload_bytes": max_upload_bytes, "max_audio_seconds": max_audio_seconds,
                                    "max_beam_size": MAX_BEAM_SIZE, "min_segment_seconds": MIN_SEGMENT_SECONDS,
                                    "request_timeout_seconds": request_timeout}}

    @v1.post("/caption", openapi_extra=CAPTION_DOCS)
    async def caption(request: Request) -> JSONResponse:
        """Caption one recording: `{caption, confidence, alternatives, duration_seconds, segments, model}`."""
        try:
            with batcher.slot(), anyio.fail_after(request_timeout):
                return JSONResponse(await captions.answer(request))
        except QueueFull as full:
            return JSONResponse({"error": str(full)}, 503, headers={"Retry-After": str(full.retry_after)})
        except TimeoutError:
            return JSONResponse({"error": f"not captioned within this server's time limit ({request_timeout:g} s); "
                                          "retry, or send a shorter recording"}, 504)

    app.include_router(v1)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class CaptionRequests:
    """POST /v1/caption: the upload received and decoded, its clip and windows captioned through the batcher."""

    def __init__(self, pipeline, batcher: CaptionBatcher, model_name: str, max_upload_bytes: int,
                 max_audio_seconds: float):
        self.pipeline, self.batcher, self.model_name = pipeline, batcher, model_name
        self.max_upload_bytes, self.max_audio_seconds = max_upload_bytes, max_audio_seconds

    async def answer(self, request: Request) -> dict:
        pipeline = self.pipeline
        max_segment = pipeline.max_seconds / 1.5  # a last window may be 1.5 windows long (segment_bounds)
        parse_options(dict(request.query_params), {}, max_segment)  # a bad option is refused before the upload
        fd, path = tempfile.mkstemp(suffix=".upload", dir=request.app.state.upload_dir)
        try:
            with os.fdopen(fd, "wb") as file:
                name, form = await receive_upload(request, file, self.max_upload_bytes)
            options = parse_options(dict(request.query_params), form, max_segment)
            limit, fix = self.duration_limit(options)
            waveform = await anyio.to_thread.run_sync(decode_upload, path, name, pipeline.sample_rate, limit, fix)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(path)
        return await self.caption(waveform, options)

    def duration_limit(self, options: CaptionOptions) -> tuple[float, str]:
        if options.segment is None and self.pipeline.max_seconds < self.max_audio_seconds:
            return self.pipeline.max_seconds, "the model captions at most that at once: send segment=10 for a " \
                                              "caption per 10 s window"
        return self.max_audio_seconds, "this server takes at most that per request: send the recording in parts"

    async def caption(self, waveform, options: CaptionOptions) -> dict:
        rate, max_seconds = self.pipeline.sample_rate, self.pipeline.max_seconds
        duration = len(waveform) / rate
        windows = [(0, len(waveform))] if options.segment is None else \
            segment_bounds(len(waveform), options.segment, rate)
        whole = duration <= max_seconds  # a recording too long for one caption has only its windows
        pieces = ([waveform] if whole else []) + ([waveform[a:b] for a, b in windows] if len(windows) > 1 else [])
        future = self.batcher.submit(pieces, options.beam_size, options.n_best)
        try:
            results = await asyncio.wrap_future(future)
        except AudiocapError as err:
            raise RequestError(422, str(err)) from None
        overall = results[0] if whole else None
        window_results = results[1:] if len(windows) > 1 else results
        return {
            "caption": overall.caption if overall else None,
            "confidence": round(overall.confidence, 6) if overall else None,
            "alternatives": overall.alternatives if overall else None,
            "duration_seconds": round(duration, 3),
            "segments": [segment_json(a / rate, b / rate, r) for (a, b), r in zip(windows, window_results)],
            "model": self.model_name,
        }


def segment_json(start: float, end: float, result: CaptionResult) -> dict:
    return {"start": round(start, 3), "end": round(end, 3), "caption": result.caption,
            "confidence": round(result.confidence, 6), "alternatives": result.alternatives}


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON `{"error": ...}`: ours, FastAPI's and Starlette's, and (500) anything unforeseen."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse({"error": err.message}, err.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        message = {404: f"no such page or endpoint: {request.url.path[:100]}; the API is described at /docs",
                   405: f"{request.method} is not allowed on {request.url.path[:100]}; see /docs"}
        return JSONResponse({"error": message.get(err.status_code, str(err.detail))}, err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        return JSONResponse({"error": f"{'.'.join(map(str, first['loc']))}: {first['msg']}"}, 422)

    @app.exception_handler(Exception)
    async def unforeseen(request: Request, err: Exception) -> JSONResponse:
        log.exception("error while answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(err).__name__}); the server logged it"}, 500)
