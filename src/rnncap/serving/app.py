"""The web service behind `rnncap serve`: POST /caption, GET /healthz and a one-page UI at GET /.

Concurrent requests are micro-batched: they wait in an asyncio queue, a single worker takes up to
`max_batch` images (waiting at most `max_wait_ms` for more) and runs one model call in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import io
import time
import warnings
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from rnncap.data.images import to_rgb
from rnncap.decode.pipeline import Captioned, caption_batch
from rnncap.serving.batcher import MicroBatcher
from rnncap.serving.errors import ApiError

MAX_FILES = 64  # images in one request at most


@dataclass
class ServeConfig:
    max_batch: int = 16  # images per model call at most
    max_wait_ms: float = 10.0  # how long a batch waits for more requests before it runs
    max_bytes: int = 10 * 1024 * 1024  # request body size cap (413 beyond)
    timeout: float = 30.0  # seconds a request may wait for its captions (504 beyond)
    beam_size: int = 3
    max_queue: int = 1024  # images waiting at most; more requests get 503


# ------------------------------------------------------------------------ uploads
def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    """Decode an uploaded file fully into an RGB image, or raise ApiError (415, 400 or 413)."""
    if not data:
        raise ApiError(400, f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and image.width * image.height > limit:
                    raise Image.DecompressionBombError(
                        f"{image.width}x{image.height} pixels, limit {limit}"
                    )
                image.load()  # decode now: truncated data fails here
                return to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ApiError(415, f"{name}: not an image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(
            413, f"{name}: too many pixels, refused as a decompression bomb ({error})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ApiError(400, f"{name}: broken image ({reason})") from None


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
def _result_json(result: Captioned, attention: bool) -> dict:
    out = {"image": result.image, "caption": result.caption, "score": round(result.score, 4)}
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


def create_app(model, vocab, config: ServeConfig | None = None, model_name: str = "") -> FastAPI:
    """The FastAPI application around one loaded model (in eval mode, on its device)."""
    config = config or ServeConfig()
    encoder = model.encoder  # build the CNN now, not on the first request
    preprocess = encoder.preprocess

    def run_batch(images: torch.Tensor, names: Sequence[str]) -> list[Captioned]:
        try:
            return caption_batch(model, vocab, images, list(names), beam_size=config.beam_size)
        finally:
            release_free_memory()

    def prepare(uploads: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        return [preprocess(decode_image_bytes(data, name)) for name, data in uploads]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(run_batch, config.max_batch, config.max_wait_ms, config.max_queue)
        batcher.start()
        app.state.batcher = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="rnncap", lifespan=lifespan, docs_url=None, redoc_url=None)
    page = _index_html()

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

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "encoder": model.config.encoder,
            "cell_type": model.config.cell_type,
            "vocab_size": len(vocab),
            "config": asdict(config),
            "batches": asdict(app.state.batcher.stats),
        }

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
