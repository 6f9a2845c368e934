"""Reading uploads under limits: the body (`rnncap.serving.bodies`), the multipart form, and
decoding the images with their memory bounded (pixels per request and in flight).

A large image is decoded at reduced size (JPEG's DCT scaling, an integer `reduce` before the RGB
conversion for other formats), and every decode waits for its pixels in a shared budget, so the
memory spent on decoding does not grow with the number of clients.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from rnncap.data.images import ImageError, decode_image_bytes, decoded_pixels
from rnncap.serving.api_error import ApiError
from rnncap.serving.bodies import Body, read_body

log = logging.getLogger("rnncap.serve")

MAX_FILES = 64  # images in one request at most
DOWNSCALE = 4  # decode large images down to this many times the encoder's input side, not less
LARGE = 4_000_000  # pixels: after decoding more, freed memory is handed back to the OS


async def read_uploads(
    request: Request, max_bytes: int, idle: float, deadline: float, buffer: Body
) -> list[tuple[str, bytes]]:
    """[(file name, bytes)] from a multipart form (every file field) or a raw image body, read
    into `buffer` (see `read_body`)."""
    body = await read_body(request, max_bytes, idle, deadline, buffer)
    content_type = request.headers.get("content-type", "").lower()  # media types ignore case
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        if content_type.startswith(("image/", "application/octet-stream")):
            return [("upload", body)]
        raise ApiError(415, "send the images as multipart/form-data (or one raw image body)")

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    limits = {"max_files": MAX_FILES, "max_fields": MAX_FILES, "max_part_size": max_bytes}
    try:
        if content_type.startswith("multipart/form-data"):
            form = await _FormParser(request.headers, _once(body), **limits).parse()
        else:
            form = await Request(request.scope, replay).form(**limits)
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


async def _once(body: bytes):
    yield body


_EXTENDED_NAME = re.compile(rb';\s*filename\*\s*=\s*("?)([^;"]*)\1', re.IGNORECASE)
_PLAIN_NAME = re.compile(rb';\s*filename\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)


def extended_file_name(disposition: bytes) -> bytes:
    """A Content-Disposition value with its RFC 5987 `filename*=charset'lang'%xx` decoded into a
    plain `filename="..."` (UTF-8) that replaces any other `filename=`; unchanged without one."""
    found = _EXTENDED_NAME.search(disposition)
    if found is None:
        return disposition
    charset, _, rest = found.group(2).decode("latin-1").partition("'")
    _, _, encoded = rest.partition("'")
    try:
        name = urllib.parse.unquote(encoded, encoding=charset.strip() or "utf-8", errors="replace")
    except LookupError:  # an unknown charset
        name = urllib.parse.unquote(encoded, errors="replace")
    name = name.replace("\\", "\\\\").replace('"', '\\"')
    rest = _PLAIN_NAME.sub(b"", _EXTENDED_NAME.sub(b"", disposition))
    return rest + b'; filename="' + name.encode("utf-8") + b'"'


class _FormParser(MultiPartParser):
    """Starlette's multipart parser, also taking a file name given as RFC 5987 `filename*=`
    (which python-multipart ignores: the part would be a text field, not a file)."""

    def on_header_end(self) -> None:
        if self._current_partial_header_name.lower() == b"content-disposition":
            value = self._current_partial_header_value
            self._current_partial_header_value = extended_file_name(value)
        super().on_header_end()


# ------------------------------------------------------------------------ decoding
_STATUS = {"not_image": 415, "bomb": 413}  # every other bad upload is a 400


def _api_error(error: ImageError) -> ApiError:
    return ApiError(_STATUS.get(error.kind, 400), str(error))


class PixelBudget:
    """A first-come first-served counting semaphore over decoded pixels.

    A decode waits until its pixels fit beside those being decoded; one larger than the whole
    budget waits until nothing else is decoding, then runs alone.
    """

    def __init__(self, pixels: int):
        self.capacity = pixels
        self.used = 0
        self.peak = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, pixels: int) -> int:
        """Wait for `pixels` (at most the capacity); returns what must be released."""
        pixels = min(pixels, self.capacity)
        if not self._waiting and self.used + pixels <= self.capacity:
            self._take(pixels)
            return pixels
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(pixels)  # granted just as the request gave up
            else:
                self._waiting.remove((pixels, granted))
                self._wake()
            raise
        return pixels

    def release(self, pixels: int) -> None:
        self.used -= pixels
        self._wake()

    def _take(self, pixels: int) -> None:
        self.used += pixels
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            pixels, granted = self._waiting.popleft()
            if not granted.done():
                self._take(pixels)
                granted.set_result(None)


class Decoder:
    """Decodes and preprocesses uploads on a few threads, under a PixelBudget.

    Images larger than DOWNSCALE x `side` on both sides are decoded at reduced size. `prepare`
    (image -> tensor) runs in the decoding thread, so the decoded image is freed before the
    budget is released.
    """

    def __init__(
        self,
        prepare: Callable,
        side: int,
        pixels_in_flight: int,
        threads: int = 2,
        after_large: Callable[[], None] | None = None,
    ):
        self.prepare = prepare
        self.min_side = side * DOWNSCALE
        self.budget = PixelBudget(pixels_in_flight)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rnncap-decode")
        self.after_large = after_large  # called after a large decode (returns memory to the OS)

    async def pixels(self, data: bytes, name: str) -> int:
        """What decoding `data` will hold, from its header; ApiError when it is no image."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._pixels, data, name)

    def _pixels(self, data: bytes, name: str) -> int:
        try:
            return decoded_pixels(data, name, self.min_side)
        except ImageError as error:
            raise _api_error(error) from None

    async def decode(self, data: bytes, name: str, pixels: int):
        """The preprocessed tensor of an upload (ApiError when it is broken). Waits for
        `pixels` in the budget; they are released when the thread ends, even if the request
        has given up by then."""
        loop = asyncio.get_running_loop()
        held = await self.budget.acquire(pixels)
        try:
            future = loop.run_in_executor(self.pool, self._decode, data, name, pixels)
        except BaseException:
            self.budget.release(held)
            raise
        future.add_done_callback(lambda _: self.budget.release(held))
        return await asyncio.shield(future)

    def _decode(self, data: bytes, name: str, pixels: int):
        started = time.perf_counter()
        try:
            return self.prepare(decode_image_bytes(data, name, self.min_side))
        except ImageError as error:
            raise _api_error(error) from None
        finally:
            if pixels > LARGE and self.after_large is not None:
                self.after_large()
            elapsed = time.perf_counter() - started
            if elapsed > 5:
                log.info("rnncap: %s: decoding %d pixels took %.1f s", name, pixels, elapsed)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
