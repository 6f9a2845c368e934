"""The web service behind `rnncap serve`: POST /caption, GET /healthz and a one-page UI at GET /.

Concurrent requests are micro-batched: they wait in an asyncio queue, a single worker takes up to
`max_batch` images (an idle server waits at most `max_wait_ms` for requests still being read or
decoded) and runs one model call in a thread. With the ONNX Runtime encoder, each request's
images are encoded as soon as they are decoded and only the beam searches are batched.
Uploads are read and decoded under limits (`rnncap.serving.uploads`); one request deadline
covers reading, decoding and captioning.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import math
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import PurePath

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from rnncap.decode.captioner import Caption, Captioner
from rnncap.serving.api_error import ApiError
from rnncap.serving.batcher import Arrival, MicroBatcher
from rnncap.serving.bodies import FREE_BYTES, Body, BodyBudget, ClientGone
from rnncap.serving.calls import batch_runner, image_encoder, request_encoder
from rnncap.serving.uploads import MAX_FILES, Decoder, read_uploads

log = logging.getLogger("rnncap.serve")


@dataclass
class ServeConfig:
    max_batch: int = 16  # images per model call at most
    max_wait_ms: float = 10.0  # how long an idle server's batch waits for requests arriving
    max_bytes: int = 10 * 1024 * 1024  # request body size cap (413 beyond)
    # Bodies being received, all requests together (past the first 64 KB of each): held in
    # memory up to this, then in temporary files up to max_upload_disk, then 503.
    max_upload_memory: int = 64 * 1024 * 1024
    max_upload_disk: int = 1024 * 1024 * 1024
    timeout: float = 30.0  # seconds for the whole request: upload, decoding, captions (504)
    body_timeout: float = 10.0  # seconds a client may send nothing while uploading (408)
    beam_size: int | None = None  # None: the model's decoding setting
    max_queue: int = 1024  # images waiting at most; more requests get 503
    # Decoding memory: a 9400 x 9400 PNG holds 88 M pixels (1 to 4 bytes each) while decoding.
    max_request_pixels: int = 200_000_000  # decoded pixels per request; later files get 413
    max_pixels_in_flight: int = 100_000_000  # decoded pixels held by all requests together
    decode_threads: int = 2
    # threads of the beam search (None: all the model's): torch's, or the BLAS threads of the
    # torch-free runtime's NumPy search. Its steps are small products that a second thread speeds
    # up little, while the HTTP side and the encoder calls beside it need that core.
    search_threads: int | None = 1
    # Encode each request's images on their own, one thread each, as soon as they are decoded,
    # and batch only the beam searches; the model's threads (torch.get_num_threads(), or the
    # runtime's ONNX Runtime threads) take the encodings and the searches alike. None: with an
    # ONNX Runtime encoder (also the runtime's), whose cost an image does not fall with the
    # batch; torch's does, and encodes whole batches.
    encode_per_request: bool | None = None

    def __post_init__(self) -> None:
        """Types and ranges; a ConfigError names the bad field."""
        from rnncap.decode.beam import MAX_BEAM
        from rnncap.utils.config import ConfigError, check_range, check_types

        check_types(self)
        if self.beam_size is not None:
            check_range("beam_size", self.beam_size, 1, MAX_BEAM)
        for name in (
            "max_batch",
            "max_bytes",
            "max_queue",
            "max_request_pixels",
            "max_pixels_in_flight",
            "decode_threads",
            "search_threads",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be at least 1, got {value}")
        for name in ("max_wait_ms", "timeout", "body_timeout"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name != "max_wait_ms"):
                raise ConfigError(
                    name, f"must be {'>= 0' if name == 'max_wait_ms' else '> 0'}, got {value}"
                )


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
    score = round(result.score, 4) if math.isfinite(result.score) else None  # JSON has no NaN
    out = {"image": result.image, "caption": result.text, "score": score}
    if attention:
        out["words"] = result.words
        out["grid"] = list(result.grid) if result.grid is not None else None
        out["attention"] = (
            [[round(float(w), 5) for w in row] for row in result.attention]
            if result.attention is not None
            else None
        )
    return out


def _error_json(name: str, error: ApiError) -> dict:
    return {"image": name, "error": error.message, "status": error.status}


def _index_html() -> str:
    return (resources.files("rnncap") / "web" / "index.html").read_text(encoding="utf-8")


def create_app(
    captioner: Captioner, config: ServeConfig | None = None, model_name: str | None = None
) -> FastAPI:
    """The FastAPI application around one loaded `Captioner` (its model on its device).

    /healthz shows `model_name` (default: the captioner's) as a name: a path is cut to its last
    part, so the service never tells clients where its files are.
    """
    config = config or ServeConfig()
    options = captioner.decode_options(beam=config.beam_size)
    model_name = captioner.name if model_name is None else model_name
    model_name = PurePath(model_name).name or model_name
    encoder = image_encoder(captioner)  # built now, not on the first request
    encode, threads = request_encoder(captioner, encoder, config.encode_per_request)
    run_batch = _batch_runner(captioner, options, config, encode is None)

    def batcher() -> MicroBatcher:
        return MicroBatcher(
            run_batch,
            config.max_batch,
            config.max_wait_ms,
            config.max_queue,
            prepare=encode,
            threads=threads,
        )

    def decoder() -> Decoder:
        side = getattr(encoder, "image_size", 224)
        return Decoder(
            captioner.preprocess,
            side,
            config.max_pixels_in_flight,
            config.decode_threads,
            after_large=release_free_memory,
        )

    app = FastAPI(
        title="rnncap",
        lifespan=_lifespan(batcher, decoder),
        docs_url=None,
        redoc_url=None,
    )
    app.state.uploads = BodyBudget(config.max_upload_memory, config.max_upload_disk)
    _add_error_handlers(app)
    _add_routes(app, captioner, config, model_name, options, encode is not None)
    return app


def _add_routes(
    app: FastAPI,
    captioner: Captioner,
    config: ServeConfig,
    model_name: str,
    options,
    per_request: bool,
) -> None:
    """GET / (the page), GET /healthz and POST /caption; `per_request`: each request's images
    are encoded on their own (the batches are beam searches only)."""
    page = _index_html()

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> dict:
        return _health(app, captioner, config, model_name, options, per_request)

    @app.post("/caption")
    async def caption(request: Request, attention: bool = False) -> dict:
        body = Body(app.state.uploads)
        try:
            return await _caption(app, config, request, attention, body)
        finally:
            body.release()
            if body.size > FREE_BYTES:  # a large body's pages go back to the system
                release_free_memory()


def _health(app: FastAPI, captioner, config, model_name, options, per_request) -> dict:
    """GET /healthz: the model, the settings and the counters of batches, decoding, uploads."""
    model, budget, bodies = captioner.config, app.state.decoder.budget, app.state.uploads
    return {
        "status": "ok",
        "model": model_name,
        "encoder": model.encoder,
        "backend": captioner.backend,
        "cell_type": model.cell_type,
        "vocab_size": len(captioner.vocab),
        "config": {
            **asdict(config),
            "beam_size": options.beam_size,
            "encode_per_request": per_request,
        },
        "batches": asdict(app.state.batcher.stats),
        "decoding": {"pixels_in_flight": budget.used, "peak_pixels_in_flight": budget.peak},
        "uploads": {
            "bytes_in_memory": bodies.in_memory,
            "bytes_on_disk": bodies.on_disk,
            "peak_bytes_in_memory": bodies.peak_in_memory,
            "peak_bytes_on_disk": bodies.peak_on_disk,
        },
    }


async def _caption(
    app: FastAPI, config: ServeConfig, request: Request, attention: bool, body: Body
) -> dict:
    """POST /caption: read the uploads (into `body`), caption them, answer per file (one file:
    its error)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.timeout
    with app.state.batcher.arriving() as arrival:  # until queued: an idle batch may wait for it
        uploads = await read_uploads(request, config.max_bytes, config.body_timeout, deadline, body)
        if len(uploads) > MAX_FILES:
            raise ApiError(400, f"at most {MAX_FILES} images per request")
        try:
            results = await asyncio.wait_for(
                _caption_uploads(app, config, uploads, arrival),
                max(deadline - loop.time(), 0.001),
            )
        except asyncio.TimeoutError:
            raise ApiError(
                504, f"no captions within the {config.timeout:g} s request timeout"
            ) from None
    if len(results) == 1 and isinstance(results[0], ApiError):
        raise results[0]
    return {
        "results": [
            _error_json(name, r) if isinstance(r, ApiError) else _result_json(r, attention)
            for (name, _), r in zip(uploads, results, strict=True)
        ]
    }


async def _caption_uploads(
    app: FastAPI, config: ServeConfig, uploads: list[tuple[str, bytes]], arrival: Arrival
) -> list[Caption | ApiError]:
    """One result per upload, in order: its caption, or the ApiError that stopped it.

    Headers first (cheap): files past the request's pixel cap are refused undecoded; the rest
    are decoded under the shared pixel budget and captioned together.
    """
    decoder: Decoder = app.state.decoder
    results: list[Caption | ApiError | None] = [None] * len(uploads)
    sizes = await asyncio.gather(
        *(decoder.pixels(data, name) for name, data in uploads), return_exceptions=True
    )
    admitted, total = [], 0
    for i, ((name, data), pixels) in enumerate(zip(uploads, sizes, strict=True)):
        if isinstance(pixels, BaseException):
            if not isinstance(pixels, ApiError):
                raise pixels
            results[i] = pixels
            continue
        total += pixels
        if total > config.max_request_pixels:
            results[i] = ApiError(
                413,
                f"{name}: not decoded, the request's images exceed "
                f"{config.max_request_pixels:,} pixels in all (send fewer per request)",
            )
            continue
        admitted.append((i, name, data, pixels))
    tensors = await asyncio.gather(
        *(decoder.decode(data, name, pixels) for _, name, data, pixels in admitted),
        return_exceptions=True,
    )
    good = []
    for (i, name, _, _), x in zip(admitted, tensors, strict=True):
        if isinstance(x, ApiError):
            results[i] = x
        elif isinstance(x, BaseException):
            raise x
        else:
            good.append((i, name, x))
    if good:
        captions = await app.state.batcher.submit(
            [x for _, _, x in good], [name for _, name, _ in good], arrival
        )
        for (i, _, _), captioned in zip(good, captions, strict=True):
            results[i] = captioned
    return results


def _batch_runner(captioner: Captioner, options, config: ServeConfig, encodes: bool):
    """`rnncap.serving.calls.batch_runner`, giving freed memory back after each batch."""
    run = batch_runner(captioner, options, config.search_threads, encodes)

    def run_batch(rows, names: Sequence[str]) -> list[Caption]:
        try:
            return run(rows, names)
        finally:
            release_free_memory()

    return run_batch


def _lifespan(new_batcher, decoder):
    """The app's lifespan: one MicroBatcher (app.state.batcher, from `new_batcher()`) and one
    Decoder (app.state.decoder, its threads and pixel budget) while the app serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = new_batcher()
        batcher.start()
        app.state.batcher = batcher
        app.state.decoder = decoder()
        yield
        await batcher.stop()
        app.state.decoder.close()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, is answered as JSON {"error": message}; a client
    that vanished mid-upload is logged as one line."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"connection": "close"} if error.close else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "client"
        log.warning("rnncap: %s %s from %s: %s", request.method, request.url.path, client, error)
        return Response(status_code=400, headers={"connection": "close"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("rnncap: %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in error.errors()
        )
        return JSONResponse({"error": f"invalid request ({problems})"}, status_code=422)
