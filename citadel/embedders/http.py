"""Shared machinery of embedders that speak HTTP: batching, spreading over servers, retries.

One embedding server embeds one batch at a time, so throughput grows only by spreading
batches over several base URLs; each URL gets one worker that pulls the next batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import orjson

from citadel import metrics
from citadel.embedders.models import resolve_dimensions
from citadel.embedders.slots import OrderedSlots
from citadel.errors import EmbedderError, EmbedderUnreachable, InputTooLongError

log = logging.getLogger(__name__)

_LENGTH_HINTS = (
    "context length", "too long", "too large", "maximum context", "exceeds", "must have less than", "max_length",
)


REFUSED_RETRY_DELAYS = (0.2, 0.5)
"""A refused connection is tried again this soon (a server restarting), then reported: unlike a
5xx or a timeout, it says the server is not there, which retrying for a minute cannot change."""

DOWN_S = 30.0
JSON_HEADERS = {"content-type": "application/json"}
"""How long a server that refused is left out while others answer."""


class ServerRefused(EmbedderError):
    """One server refused the connection (or its name did not resolve)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach embedding server {url}: {reason}; is it running?", backend=True)
        self.url = url
        self.reason = reason


def _connect_reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused"), not httpx's
    "All connection attempts failed"."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ssl.SSLCertVerificationError):  # an OSError whose errno means nothing here
            return f"TLS certificate not trusted: {current.verify_message}"
        if isinstance(current, OSError) and current.strerror:
            if current.errno is not None and current.errno > 0 and not isinstance(current, socket.gaierror):
                return os.strerror(current.errno)
            return current.strerror
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def error_message(response: httpx.Response) -> str:
    """The server's own words: the JSON ``error`` field (or ``error.message``), else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("message", body.get("detail")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:500]
    return str(body)[:500]


def looks_like_length_error(status: int, message: str) -> bool:
    """A 413 (payload too large), or a 400/422/500 whose message speaks of length or context.

    llama.cpp answers an over-long input with a 500 ("input is too large to process"): retrying
    the same request cannot help, halving it can.
    """
    lowered = message.lower()
    return status == 413 or (status in (400, 422, 500) and any(hint in lowered for hint in _LENGTH_HINTS))


class HttpEmbedder:
    """Base class: subclasses build one request for a batch and parse its response."""

    kind = "http"
    url_setting = "the embedder URLs"  # the variable that names the servers, for messages

    def __init__(
        self,
        model: str,
        urls: Sequence[str],
        *,
        dimensions: int | None = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_input_chars: int = 8000,
        requests_per_server: int = 1,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.model = model
        self.dimensions = resolve_dimensions(model, dimensions)
        self.urls = [url.rstrip("/") for url in urls]
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_input_chars = max_input_chars
        # At most this many requests at a server at once, across every concurrent embed() call. A
        # server embeds one at a time; a second request waiting in its queue starts the moment the
        # first ends, where one at a time would leave it idle while the answer travels and the next is sent.
        self.requests_per_server = requests_per_server
        self._slots = {url: OrderedSlots(requests_per_server) for url in self.urls}
        self._calls = itertools.count()  # each embed() call's turn: an older call's requests go first
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            headers=headers or {},
            transport=transport,
            # Certificates are loaded only for https servers: building that context costs 30-50 ms of CPU.
            verify=any(url.lower().startswith("https://") for url in self.urls),
        )
        self.requests = 0
        self._servers = {url: metrics.server_label(url) for url in self.urls}  # metric labels
        self._turn = 0
        self._down_until: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    # subclasses -------------------------------------------------------------------------
    async def _request_batch(self, url: str, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    # shared -----------------------------------------------------------------------------
    async def _post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` as JSON written by orjson (a batch of texts is tens of kilobytes, which the
        standard library's encoder takes milliseconds over), with :meth:`_send`'s retries."""
        return await self._send("POST", url, content=orjson.dumps(body), headers=JSON_HEADERS)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on connection errors, 429 and 5xx; never on other 4xx."""
        attempt = 0
        refused = 0
        labels = (metrics.server_label(url), self.model)
        while True:
            try:
                self.requests += 1
                metrics.EMBED_REQUESTS.labels(*labels).inc()
                started = time.perf_counter()
                try:
                    response = await self._client.request(method, url, **kwargs)
                finally:
                    metrics.EMBED_LATENCY.labels(*labels).observe(time.perf_counter() - started)
            except httpx.ConnectError as exc:  # refused, or a name that does not resolve
                metrics.EMBED_ERRORS.labels(*labels, "refused").inc()
                if refused >= min(self.retries, len(REFUSED_RETRY_DELAYS)):
                    raise ServerRefused(url, _connect_reason(exc)) from exc
                await asyncio.sleep(REFUSED_RETRY_DELAYS[refused])
                refused += 1
                continue
            except httpx.TransportError as exc:
                reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport"
                metrics.EMBED_ERRORS.labels(*labels, reason).inc()
                if attempt >= self.retries:
                    if isinstance(exc, httpx.TimeoutException):
                        raise EmbedderError(
                            f"embedding server {url} did not answer within {self._client.timeout.read}s; "
                            "raise CITADEL_EMBED_TIMEOUT_S or lower CITADEL_EMBED_BATCH_SIZE",
                            transient=True,
                        ) from exc
                    raise EmbedderError(
                        f"cannot reach embedding server {url}: {exc!r}; is it running?", transient=True
                    ) from exc
                await self._sleep(attempt, None)
                attempt += 1
                continue
            if response.status_code >= 400:
                code = response.status_code
                metrics.EMBED_ERRORS.labels(*labels, "http_429" if code == 429 else "http_5xx" if code >= 500 else "http_4xx").inc()
            if response.status_code == 429 or response.status_code >= 500:
                if looks_like_length_error(response.status_code, error_message(response)):
                    return response  # the input's length, not the server's state: no retry
                if attempt >= self.retries:
                    raise EmbedderError(
                        f"embedding server {url} answered {response.status_code}: {error_message(response)}",
                        status=response.status_code,
                        transient=True,
                    )
                await self._sleep(attempt, response.headers.get("retry-after"))
                attempt += 1
                continue
            return response

    async def _sleep(self, attempt: int, retry_after: str | None) -> None:
        """Exponential backoff with full jitter; honour a numeric Retry-After when given."""
        delay = self.backoff_s * (2**attempt) * random.uniform(0.5, 1.0)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass
        await asyncio.sleep(delay)

    def _raise_for(self, response: httpx.Response, url: str) -> None:
        if response.status_code < 400:
            return
        message = error_message(response)
        if looks_like_length_error(response.status_code, message):
            raise InputTooLongError(f"{url}: {message}", status=response.status_code)
        raise EmbedderError(
            f"embedding server {url} answered {response.status_code}: {message}", status=response.status_code
        )

    def _json_body(self, response: httpx.Response, url: str) -> dict[str, Any]:
        """The response's JSON object; anything else is an :class:`EmbedderError`.

        Parsed by orjson: a batch of 64 vectors of 768 dimensions is 49,000 numbers, about 25 ms
        with the standard library, time in which the serial server behind waits for the next batch.
        """
        try:
            body = orjson.loads(response.content)
        except ValueError as exc:  # orjson.JSONDecodeError is one
            raise EmbedderError(
                f"{url} answered {response.status_code} with a non-JSON body: {response.text[:200]!r}", backend=True
            ) from exc
        if not isinstance(body, dict):
            raise EmbedderError(f"{url} answered JSON {type(body).__name__}, expected an object", backend=True)
        return body

    def _check_vectors(self, vectors: list[list[float]], expected: int) -> np.ndarray:
        """The answer's vectors as a float32 matrix, converted in one step; only an answer that is not
        ``expected`` vectors of the configured size is looked at more closely, to say what is wrong."""
        if len(vectors) != expected:
            raise EmbedderError(f"server returned {len(vectors)} vectors for {expected} inputs", backend=True)
        try:
            matrix = np.array(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            matrix = None
            problem = exc
        if matrix is not None and matrix.shape == (expected, self.dimensions):
            return matrix
        sizes = {len(v) if isinstance(v, (list, tuple)) else -1 for v in vectors}
        if sizes != {self.dimensions}:
            got = "/".join(str(size) for size in sorted(sizes))
            raise EmbedderError(
                f"model {self.model} returned {got}-dimensional vectors, expected {self.dimensions}; "
                "set CITADEL_EMBEDDING_DIMENSIONS to the model's real size",
                backend=True,
            )
        raise EmbedderError(f"model {self.model} returned non-numeric vectors: {problem}", backend=True)

    async def _embed_with_halving(self, url: str, texts: list[str]) -> np.ndarray:
        """Embed a batch; when the server rejects it for length, halve it, and at one text truncate it."""
        try:
            return self._check_vectors(await self._request_batch(url, texts), len(texts))
        except InputTooLongError:
            if len(texts) > 1:
                middle = len(texts) // 2
                left = await self._embed_with_halving(url, texts[:middle])
                right = await self._embed_with_halving(url, texts[middle:])
                return np.vstack([left, right])
            text = texts[0]
            if len(text) <= 16:
                raise
            log.warning("input of %d characters too long for %s; truncating to half", len(text), self.model)
            return await self._embed_with_halving(url, [text[: len(text) // 2]])

    async def _request(self, url: str, texts: list[str]) -> np.ndarray:
        """One request's vectors, counted in the server's gauges."""
        slots = metrics.EMBED_SLOTS.labels(self._servers[url], self.model)
        slots.inc()
        try:
            vectors = await self._embed_with_halving(url, texts)
        finally:
            slots.dec()
        metrics.EMBED_TEXTS.labels(self._servers[url], self.model).inc(len(texts))
        return vectors

    async def _work(
        self, url: str, order: int, queue: asyncio.Queue[int], batches: list[list[str]], results: np.ndarray,
        refused: dict[str, str],
    ) -> None:
        """Send the call's requests from ``queue`` to ``url`` until none is left or the server refuses.

        A slot at the server is kept from one request to the next of this call, and given up
        between them only to an older call: that call's batch ends first (see OrderedSlots).
        """
        slots = self._slots[url]
        await slots.acquire(order)
        holding = True
        try:
            while not queue.empty():
                index = queue.get_nowait()
                try:
                    start = index * self.batch_size
                    results[start : start + len(batches[index])] = await self._request(url, batches[index])
                except ServerRefused as exc:
                    queue.put_nowait(index)  # another server takes it
                    refused[url] = exc.reason
                    self._down_until[url] = time.monotonic() + DOWN_S
                    return
                except EmbedderError as exc:
                    if exc.backend and exc.status is None:  # an answer that is not vectors of the configured size
                        metrics.EMBED_ERRORS.labels(self._servers[url], self.model, "invalid_response").inc()
                    raise
                if not queue.empty() and slots.older_than(order):
                    holding = False
                    slots.release()
                    await slots.acquire(order)
                    holding = True
        finally:
            if holding:
                slots.release()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        prepared = [text[: self.max_input_chars] for text in texts]
        batches = [prepared[i : i + self.batch_size] for i in range(0, len(prepared), self.batch_size)]
        results = np.empty((len(prepared), self.dimensions), dtype=np.float32)  # each answer written in its place
        order = next(self._calls)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(batches)):
            queue.put_nowait(index)
        refused: dict[str, str] = {}

        now = time.monotonic()
        up = [url for url in self.urls if self._down_until.get(url, 0.0) <= now] or self.urls
        while not queue.empty():
            # Servers that refused a moment ago only when every other one refuses now.
            live = [url for url in up if url not in refused] or [url for url in self.urls if url not in refused]
            if not live:
                tried = ", ".join(f"{url} ({reason})" for url, reason in refused.items())
                raise EmbedderUnreachable(
                    f"no embedding server accepts connections (tried {tried}); start the server, or fix {self.url_setting}"
                )
            # Idle servers first, taken in turns: concurrent small calls (the API's micro-batches)
            # then spread over every server instead of queueing on the first.
            self._turn = (self._turn + 1) % len(live)
            live = sorted(live[self._turn :] + live[: self._turn], key=lambda url: self._slots[url].locked())
            lanes = [url for _ in range(self.requests_per_server) for url in live]
            workers = [asyncio.create_task(self._work(url, order, queue, batches, results, refused)) for url in lanes[: queue.qsize()]]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
        return results  # every batch has its vectors once the queue is empty
