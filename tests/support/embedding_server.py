"""A local embedding server that speaks Ollama's and the OpenAI embeddings protocol, for tests.

It is a real uvicorn server on 127.0.0.1 in a background thread, so embedders reach it through
httpx over TCP exactly as they reach a real server. Vectors are deterministic functions of the
model and the text (see :func:`embedding_for`), so tests can compute what must come back.
Tests steer it through plain attributes and methods: legacy mode, an API key, injected failures,
delays, and counters of what it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

DEFAULT_MODELS: dict[str, int] = {
    "nomic-embed-text:latest": 768,
    "all-minilm:latest": 384,
    "mxbai-embed-large:latest": 1024,
    "text-embedding-3-small": 1536,
    "BAAI/bge-small-en-v1.5": 384,
}

NOT_FOUND_BODY = "404 page not found"
EMBED_PATHS = ("/api/embed", "/api/embeddings", "/v1/embeddings")
LENGTH_ERROR = "the input length exceeds the context length"

_DEFAULT_MESSAGES = {
    400: "invalid request",
    429: "rate limit exceeded, please retry later",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def canonical_model(name: str) -> str:
    """Ollama's own naming: a name without a tag means ``:latest``; Hugging Face ids stay as they are."""
    if ":" in name or "/" in name:
        return name
    return f"{name}:latest"


def _raw_vector(model: str, text: str, dimensions: int) -> np.ndarray:
    """Standard-normal components seeded by sha256 of model and text: the same input, the same vector."""
    digest = hashlib.sha256(f"{canonical_model(model)}\x00{text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return rng.standard_normal(dimensions)


def embedding_for(model: str, text: str, dimensions: int, *, normalised: bool = True) -> np.ndarray:
    """The float32 vector the server returns for ``text``.

    ``/api/embed`` and ``/v1/embeddings`` return unit vectors; the legacy ``/api/embeddings``
    returns them unnormalised, as Ollama does.
    """
    vector = _raw_vector(model, text, dimensions)
    if normalised:
        vector = vector / np.linalg.norm(vector)
    return vector.astype(np.float32)


@dataclass
class Fault:
    """One injected failure: the status, the body and an optional Retry-After header."""

    status: int
    body: str | dict[str, Any] | None = None
    retry_after: str | None = None
    path: str | None = None


class EmbeddingServer:
    """An Ollama- and OpenAI-compatible embedding server on a free local port.

    Use it as a context manager or call :meth:`start` and :meth:`stop`; several instances can run
    at once. Settings (``legacy``, ``api_key``, ``context_chars``, ``honour_truncate``,
    ``reverse_openai_data``) may be changed between requests; :meth:`reset` restores them.
    """

    def __init__(
        self,
        models: Mapping[str, int] | None = None,
        *,
        context_chars: int | None = 2048,
        legacy: bool = False,
        api_key: str | None = None,
        honour_truncate: bool = False,
        reverse_openai_data: bool = False,
    ) -> None:
        self._initial_models = {canonical_model(name): size for name, size in (models or DEFAULT_MODELS).items()}
        self._initial = (context_chars, legacy, api_key, honour_truncate, reverse_openai_data)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._generation = 0
        self.port: int | None = None
        self._serial_lock: asyncio.Lock | None = None
        self.reset()

    # configuration and observation ---------------------------------------------------------
    def reset(self) -> None:
        """Back to the constructor's settings, with no faults, no delay and zeroed counters."""
        with self._lock:
            self._generation += 1  # requests still held from before answer at once and are not counted
            self.models: dict[str, int] = dict(self._initial_models)
            self.context_chars: int | None
            self.legacy: bool
            self.api_key: str | None
            self.honour_truncate: bool
            self.reverse_openai_data: bool
            (self.context_chars, self.legacy, self.api_key, self.honour_truncate, self.reverse_openai_data) = self._initial
            self._faults: deque[Fault] = deque()
            self._delays: deque[float] = deque()
            self._delay_all: float = 0.0
            self.requests: Counter[str] = Counter()
            self.batch_sizes: list[int] = []
            self.received: list[list[str]] = []
            self.authorizations: list[str | None] = []
            self.in_flight = 0
            self.max_in_flight = 0
            self.cost: tuple[float, float] | None = None
            self.intervals: list[tuple[float, float]] = []  # (start, end) of each request's embedding, epoch seconds
            self.busy_s = 0.0  # time spent embedding, one request at a time (serial mode): the embedding floor
            self.first_started: float | None = None
            self.last_finished: float | None = None

    def fail_next(
        self,
        count: int,
        status: int = 500,
        *,
        body: str | dict[str, Any] | None = None,
        retry_after: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``path`` only, when given) with ``status``.

        Any status works, 200 included, to send a malformed answer. ``body`` defaults to an
        Ollama-style ``{"error": ...}`` for that status; a string body
        is sent as plain text. ``retry_after`` sets the Retry-After header.
        """
        with self._lock:
            for _ in range(count):
                self._faults.append(Fault(status, body, retry_after, path))

    def serial(self, per_request_s: float, per_text_s: float) -> None:
        """Embed like one Ollama server: one request at a time, each costing a fixed time plus a
        time per text (the model's work)."""
        with self._lock:
            self.cost = (per_request_s, per_text_s)

    def delay(self, seconds: float, count: int | None = None) -> None:
        """Hold the next ``count`` responses (every response when None) for ``seconds``."""
        with self._lock:
            if count is None:
                self._delay_all = seconds
            else:
                self._delays.extend([seconds] * count)

    @property
    def url(self) -> str:
        """The Ollama base URL, e.g. ``http://127.0.0.1:54321``."""
        if self.port is None:
            raise RuntimeError("the embedding server is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible base URL (``…/v1``)."""
        return f"{self.url}/v1"

    def dimensions(self, model: str) -> int:
        return self.models[canonical_model(model)]

    def vector(self, text: str, model: str = "nomic-embed-text", *, normalised: bool = True) -> np.ndarray:
        """What this server answers for ``text`` with ``model``."""
        return embedding_for(model, text, self.dimensions(model), normalised=normalised)

    def vectors(self, texts: Iterable[str], model: str = "nomic-embed-text", *, normalised: bool = True) -> np.ndarray:
        return np.vstack([self.vector(text, model, normalised=normalised) for text in texts])

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> EmbeddingServer:
        """Bind a free port (the same one when started again) and serve from a daemon thread; returns once
        the server accepts connections."""
        if self._thread is not None:
            return self
        # proto=IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections; without it
        # every answer on a kept-alive connection waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port or 0))  # after stop(), on the same port again
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi, interface="asgi3", lifespan="off", log_level="warning", access_log=False, loop="asyncio", http="h11"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"embedding-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedding server did not start")
            time.sleep(0.005)
        return self

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        self._server.run(sockets=[sock])

    def stop(self) -> None:
        """Stop serving: wake delayed requests, drop open connections, join the thread."""
        if self._thread is None or self._server is None:
            return
        self._stopping = True
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)
        self._thread = None
        self._server = None
        self._stopping = False

    def __enter__(self) -> EmbeddingServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ASGI ----------------------------------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path
        with self._lock:
            generation = self._generation
            self.requests[path] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            delay = self._delays.popleft() if self._delays else self._delay_all
        try:
            await request.body()  # read the whole request first, as a real server does
            # The answer is worked out (and recorded) at once; a delay holds only its sending,
            # so a request whose client timed out never shows up in a later test's counters.
            response = self._take_fault(path)
            if response is None and self.cost is not None and path in EMBED_PATHS:
                response = await self._serially(request, path, generation)
            elif response is None:
                response = await self._route(request, path)
            if delay > 0:
                await self._hold(delay, generation)
            await response(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass  # the client gave up (a timeout test) or the server is stopping
        finally:
            with self._lock:
                if generation == self._generation:
                    self.in_flight -= 1

    async def _serially(self, request: Request, path: str, generation: int) -> Response:
        """Answer like one model server: one request at a time, each taking its cost (a fixed time plus
        a time per text), or its real work when that is longer, so the speed set is the speed served."""
        if self._serial_lock is None:
            self._serial_lock = asyncio.Lock()
        per_request, per_text = self.cost or (0.0, 0.0)
        body = json.loads(await request.body() or b"{}")
        inputs = body.get("input", body.get("prompt", ""))
        count = len(inputs) if isinstance(inputs, list) else 1
        async with self._serial_lock:
            started = time.monotonic()
            response = await self._route(request, path)
            await self._hold(per_request + per_text * count - (time.monotonic() - started), generation)
            finished = time.monotonic()
            with self._lock:
                self.busy_s += finished - started
                now = time.time()  # wall clock: a benchmark places it against the run's own times
                self.first_started = now - (finished - started) if self.first_started is None else self.first_started
                self.last_finished = now
                self.intervals.append((round(now - (finished - started), 4), round(now, 4)))
        return response

    def stats(self) -> dict[str, Any]:
        """What the server did: requests and texts embedded, how long it was busy embedding (serial
        mode), and when (epoch seconds) its first request started and its last one ended."""
        with self._lock:
            return {"busy_s": round(self.busy_s, 4), "first_started": self.first_started, "last_finished": self.last_finished,
                    "requests": len(self.batch_sizes), "texts": sum(self.batch_sizes), "intervals": list(self.intervals)}

    async def _hold(self, seconds: float, generation: int) -> None:
        """Wait ``seconds``, but stop waiting when the server stops or is reset."""
        deadline = time.monotonic() + seconds
        while not self._stopping and generation == self._generation:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.01))

    def _take_fault(self, path: str) -> Response | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    self._faults.remove(fault)
                    break
            else:
                return None
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        body = fault.body
        if body is None:
            body = {"error": _DEFAULT_MESSAGES.get(fault.status, f"injected failure {fault.status}")}
        if isinstance(body, str):
            return PlainTextResponse(body, status_code=fault.status, headers=headers)
        return JSONResponse(body, status_code=fault.status, headers=headers)

    async def _route(self, request: Request, path: str) -> Response:
        method = request.method
        if method == "GET" and path == "/":
            return PlainTextResponse("Ollama is running")
        if method == "GET" and path == "/api/version":
            return JSONResponse({"version": "0.1.30" if self.legacy else "0.6.2"})
        if method == "GET" and path == "/api/tags":
            return self._tags()
        if method == "GET" and path == "/_stub/stats":  # the test server's own: what a benchmark reads
            return JSONResponse(self.stats())
        if method == "POST" and path == "/api/embed" and not self.legacy:
            return await self._ollama_embed(request)
        if method == "POST" and path == "/api/embeddings":
            return await self._ollama_legacy(request)
        if path.startswith("/v1/"):
            denied = self._check_key(request)
            if denied is not None:
                return denied
            if method == "POST" and path == "/v1/embeddings":
                return await self._openai_embed(request)
            if method == "GET" and path == "/v1/models":
                return JSONResponse(
                    {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "library"} for name in self.models]}
                )
        # Ollama's router (gin) answers unknown routes, and known routes with another method, so.
        return PlainTextResponse(NOT_FOUND_BODY, status_code=404)

    # Ollama --------------------------------------------------------------------------------
    def _tags(self) -> Response:
        models = []
        for name, size in self.models.items():
            digest = hashlib.sha256(name.encode()).hexdigest()
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 1_000_000 * size // 4,
                    "digest": digest,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "bert",
                        "families": ["bert"],
                        "parameter_size": f"{size // 6}M",
                        "quantization_level": "F16",
                    },
                }
            )
        return JSONResponse({"models": models})

    @staticmethod
    async def _json(request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "invalid character in request body"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "json: cannot unmarshal into request"}, status_code=400)
        return body

    def _ollama_model(self, body: Mapping[str, Any]) -> tuple[str, int] | Response:
        model = body.get("model")
        if not model or not isinstance(model, str):
            return JSONResponse({"error": "model is required"}, status_code=400)
        size = self.models.get(canonical_model(model))
        if size is None:
            return JSONResponse({"error": f'model "{model}" not found, try pulling it first'}, status_code=404)
        return model, size

    async def _ollama_embed(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        resolved = self._ollama_model(body)
        if isinstance(resolved, Response):
            return resolved
        model, size = resolved
        raw = body.get("input", [])
        if isinstance(raw, str):
            texts = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            texts = list(raw)
        else:
            return JSONResponse({"error": "invalid input type"}, status_code=400)
        self._record(texts)
        if self.context_chars is not None:
            if self.honour_truncate and body.get("truncate", True) is not False:
                texts = [text[: self.context_chars] for text in texts]
            elif any(len(text) > self.context_chars for text in texts):
                return JSONResponse({"error": LENGTH_ERROR}, status_code=400)
        embeddings = [embedding_for(model, text, size).tolist() for text in texts]
        return _FastJSONResponse(
            {
                "model": model,
                "embeddings": embeddings,
                "total_duration": time.perf_counter_ns() - started,
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(_tokens(text) for text in texts),
            }
        )

    async def _ollama_legacy(self, request: Request) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        resolved = self._ollama_model(body)
        if isinstance(resolved, Response):
            return resolved
        model, size = resolved
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            return JSONResponse({"error": "invalid prompt type"}, status_code=400)
        with self._lock:
            self.received.append([prompt])
        if not prompt:
            # An empty prompt only loads the model, and Ollama answers an empty vector.
            return JSONResponse({"embedding": []})
        if self.context_chars is not None and len(prompt) > self.context_chars:
            return JSONResponse({"error": LENGTH_ERROR}, status_code=400)
        return JSONResponse({"embedding": embedding_for(model, prompt, size, normalised=False).tolist()})

    # OpenAI-compatible ---------------------------------------------------------------------
    def _check_key(self, request: Request) -> Response | None:
        header = request.headers.get("authorization")
        with self._lock:
            self.authorizations.append(header)
        if self.api_key is None or header == f"Bearer {self.api_key}":
            return None
        return JSONResponse(
            {"error": {"message": "Invalid API key", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
            status_code=401,
        )

    async def _openai_embed(self, request: Request) -> Response:
        body = await self._json(request)
        if isinstance(body, Response):
            return _openai_error(body.status_code, "could not parse the JSON body of your request")
        model = body.get("model")
        size = self.models.get(canonical_model(model)) if isinstance(model, str) else None
        if size is None:
            return _openai_error(404, f"The model `{model}` does not exist", code="model_not_found")
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
            texts = list(raw)
        else:
            return _openai_error(400, "'input' must be a string or a non-empty array of strings")
        self._record(texts)
        if self.context_chars is not None and any(len(text) > self.context_chars for text in texts):
            longest = max(len(text) for text in texts)
            return _openai_error(
                400,
                f"This model's maximum context length is {self.context_chars} tokens, however you requested "
                f"{longest} tokens. Please reduce your prompt.",
            )
        data = [
            {"object": "embedding", "index": index, "embedding": embedding_for(model, text, size).tolist()}
            for index, text in enumerate(texts)
        ]
        if self.reverse_openai_data:
            data.reverse()
        tokens = sum(_tokens(text) for text in texts)
        return _FastJSONResponse(
            {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )

    def _record(self, texts: list[str]) -> None:
        with self._lock:
            self.batch_sizes.append(len(texts))
            self.received.append(list(texts))


class _FastJSONResponse(JSONResponse):
    """JSON written by orjson: the same text for these bodies, twenty times faster on vectors, so the
    server's own encoding does not cap the speed a benchmark sets."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _tokens(text: str) -> int:
    """A rough token count (four characters a token), for the usage fields."""
    return max(1, math.ceil(len(text) / 4))


def _openai_error(status: int, message: str, *, code: str | None = None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}},
        status_code=status,
    )


def free_port() -> int:
    """A local port nothing listens on (bound then released), for unreachable-server tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    """Serve on its own (``python -m tests.support.embedding_server --serial 0.02,0.001``) until
    SIGTERM: the benchmark runs it as a process of its own so that it does not share a GIL with
    the load it answers. Prints ``EMBEDDING_SERVER_URL=...`` once listening."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--serial", default=None, help="seconds per request,seconds per text: embed one request at a time")
    args = parser.parse_args()
    server = EmbeddingServer().start()
    if args.serial:
        per_request, per_text = (float(part) for part in args.serial.split(","))
        server.serial(per_request, per_text)
    print(f"EMBEDDING_SERVER_URL={server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()


__all__ = ["DEFAULT_MODELS", "EmbeddingServer", "LENGTH_ERROR", "NOT_FOUND_BODY", "embedding_for", "free_port"]
