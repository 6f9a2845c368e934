"""The web service behind `rnncap serve`: POST /caption, GET /healthz and a one-page UI at GET /.

Concurrent requests are micro-batched: they wait in an asyncio queue, a single worker takes up to
`max_batch` images (waiting at most `max_wait_ms` for more) and runs one model call in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from rnncap.data.images import ImageError, decode_image_bytes
from rnncap.decode.captioner import Caption, Captioner
from rnncap.serving.batcher import MicroBatcher
from rnncap.serving.errors import ApiError

MAX_FILES = 64  # images in one request at most


@dataclass
class ServeConfig:
    max_batch: int = 16  # images per model call at most
    max_wait_ms: float = 10.0  # how long a batch waits for more requests before it runs
    max_bytes: int = 10 * 1024 * 1024  # request body size cap (413 beyond)
    timeout: float = 30.0  # seconds a request may wait for its captions (504 beyond)
    beam_size: int | None = None  # None: the model's decoding setting
    max_queue: int = 1024  # images waiting at most; more requests get 503


# ------------------------------------------------------------------------ uploads
_STATUS = {"not_image": 415, "bomb": 413}  # every other bad upload is a 400


def decode_upload(data: bytes, name: str) -> Image.Image:
    """Decode an uploaded file fully into an RGB image, or raise ApiError (415, 413 or 400)."""
    try:
        return decode_image_bytes(data, name)
    except ImageError as error:
        raise ApiError(_STATUS.get(error.kind, 400), str(error)) from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(declared) > max_bytes:
            raise ApiError(413, f"request of {int(declared)} bytes exceeds the {max_bytes} limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"request exceeds the {max_bytes} byte limit")
    return bytes(body)


async def read_uploads(request: Request, max_bytes: int) -> list[tuple[str, bytes]]:
    """[(file name, bytes)] from a multipart form (every file field) or a raw image body."""
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        if content_type.startswith(("image/", "application/octet-stream")):
            return [("upload", body)]
        raise ApiError(415, "send the images as multipart/form-data (or one raw image body)")

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=MAX_FILES, max_fields=MAX_FILES, max_part_size=max_bytes
        )
    except Exception as error:  # starlette's MultiPartException, or malformed multipart data
        raise ApiError(400, f"malformed multipart form ({error})") from None
    files = []
    for _, value in form.multi_items():
        if not isinstance(value, str):  # an UploadFile
            files.append((value.filename or "upload", await value.read()))
    await form.close()
    if not files:
        raise ApiError(400, "no image file in the form (send one or more file fields)")
    return files


# ------------------------------------------------------------------------ memory
@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim; elsewhere a no-op).

    Batches of varying size make the CPU encoder allocate buffers of ever new sizes; without
    this, glibc keeps the freed ones and a busy server's RSS creeps up by hundreds of MB.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# ------------------------------------------------------------------------ the application
def _result_json(result: Caption, attention: bool) -> dict:
    out = {"image": result.image, "caption": result.text, "score": round(result.score, 4)}
    if attention:
        out["words"] = result.words
        out["grid"] = list(result.grid) if result.grid is not None else None
        out["attention"] = (
            [[round(float(w), 5) for w in row] for row in result.attention]
            if result.attention is not None
            else None
        )
    return out


def _index_html() -> str:
    return (resources.files("rnncap") / "web" / "index.html").read_text(encoding="utf-8")


def create_app(
    captioner: Captioner, config: ServeConfig | None = None, model_name: str | None = None
) -> FastAPI:
    """The FastAPI application around one loaded `Captioner` (its model on its device)."""
    config = config or ServeConfig()
    options = captioner.decode_options(beam=config.beam_size)
    model_name = captioner.name if model_name is None else model_name
    _ = captioner.model.encoder  # build the CNN now, not on the first request

    def run_batch(images: torch.Tensor, names: Sequence[str]) -> list[Caption]:
        try:
            return captioner.caption_images(images, list(names), options)
        finally:
            release_free_memory()

    def prepare(uploads: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        return [captioner.preprocess(decode_upload(data, name)) for name, data in uploads]

    app = FastAPI(
        title="rnncap", lifespan=_lifespan(run_batch, config), docs_url=None, redoc_url=None
    )
    page = _index_html()

    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        model = captioner.config
        return {
            "status": "ok", "model": model_name, "encoder": model.encoder,
            "backend": captioner.backend, "cell_type": model.cell_type,
            "vocab_size": len(captioner.vocab),
            "config": {**asdict(config), "beam_size": options.beam_size},
            "batches": asdict(app.state.batcher.stats),
        }  # fmt: skip

    @app.post("/caption")
    async def caption(request: Request, attention: bool = False) -> dict:
        started = time.monotonic()
        uploads = await read_uploads(request, config.max_bytes)
        if len(uploads) > MAX_FILES:
            raise ApiError(400, f"at most {MAX_FILES} images per request")
        images = await run_in_threadpool(prepare, uploads)
        remaining = config.timeout - (time.monotonic() - started)
        try:
            results = await asyncio.wait_for(
                app.state.batcher.submit(images, [name for name, _ in uploads]),
                max(remaining, 0.001),
            )
        except asyncio.TimeoutError:
            raise ApiError(
                504, f"no captions within the {config.timeout:g} s request timeout"
            ) from None
        return {"results": [_result_json(r, attention) for r in results]}

    return app


def _lifespan(run_batch, config: ServeConfig):
    """The app's lifespan: one MicroBatcher (app.state.batcher) running while the app serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(run_batch, config.max_batch, config.max_wait_ms, config.max_queue)
        batcher.start()
        app.state.batcher = batcher
        yield
        await batcher.stop()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, is answered as JSON {"error": message}."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in error.errors()
        )
        return JSONResponse({"error": f"invalid request ({problems})"}, status_code=422)
