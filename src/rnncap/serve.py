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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from rnncap.images import to_rgb
from rnncap.inference import Captioned, caption_batch

MAX_FILES = 64  # images in one request at most


@dataclass
class ServeConfig:
    max_batch: int = 16  # images per model call at most
    max_wait_ms: float = 10.0  # how long a batch waits for more requests before it runs
    max_bytes: int = 10 * 1024 * 1024  # request body size cap (413 beyond)
    timeout: float = 30.0  # seconds a request may wait for its captions (504 beyond)
    beam_size: int = 3
    max_queue: int = 1024  # images waiting at most; more requests get 503


class ApiError(Exception):
    """An error answered as JSON {"error": message} with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


# ------------------------------------------------------------------------ micro-batching
@dataclass
class _Job:
    images: list[torch.Tensor]  # preprocessed (3, S, S) each
    names: list[str]
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    batches: int = 0
    largest_batch: int = 0


@dataclass
class MicroBatcher:
    """Collects queued jobs into batches of at most `max_batch` images and runs them in a thread.

    run_batch(images (N, 3, S, S), names) -> one result per image; it runs in one thread, so model
    calls never overlap. A job with more images than `max_batch` runs as a batch of its own.
    """

    run_batch: Callable[[torch.Tensor, list[str]], list]
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 1024
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._queued_images = 0
        self._carry: _Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnncap-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, images: list[torch.Tensor], names: list[str]) -> list:
        """Queue one request's images; resolves to their results. ApiError 503 when full."""
        if self._queued_images + len(images) > self.max_queue:
            raise ApiError(503, "server busy: too many images waiting, try again later")
        job = _Job(images, names, asyncio.get_running_loop().create_future())
        self._queued_images += len(images)
        self._queue.put_nowait(job)
        return await job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        """The next job: waits forever (None), up to `timeout` s, or not at all; None if none."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            if timeout is None:
                job = await self._queue.get()
            elif timeout <= 0:
                job = self._queue.get_nowait()
            else:
                job = await asyncio.wait_for(self._queue.get(), timeout)
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        self._queued_images -= len(job.images)
        return job

    async def _collect(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        jobs = [await self._next(None)]
        size = len(jobs[0].images)
        deadline = loop.time() + self.max_wait_ms / 1000
        while size < self.max_batch:
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            if size + len(job.images) > self.max_batch:
                self._carry = job  # it starts the next batch
                break
            jobs.append(job)
            size += len(job.images)
        return [job for job in jobs if not job.future.done()]  # timed-out requests dropped

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            if not jobs:
                continue
            images = torch.stack([x for job in jobs for x in job.images])  # (N, 3, S, S)
            names = [n for job in jobs for n in job.names]
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, images, names)
            except Exception as error:  # the model failed: every waiting request hears it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(ApiError(500, f"model error: {error}"))
                continue
            self.stats.requests += len(jobs)
            self.stats.images += len(names)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(names))
            start = 0
            for job in jobs:
                part = results[start : start + len(job.images)]
                start += len(job.images)
                if not job.future.done():
                    job.future.set_result(part)


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
