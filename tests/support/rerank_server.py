"""A reranking server speaking Text Embeddings Inference's ``POST /rerank`` on a free local port.

TEI's contract, as its router serves it: a JSON body ``{query, texts, truncate?, raw_scores?,
return_text?}``; the answer a list ``[{index, score}]`` sorted by score, best first; an empty
``texts`` is a 422 and more than ``max_client_batch_size`` (32) a 413, each as
``{error, error_type}``. Its "model" scores a passage by the share of the query's words it holds
(deterministic, so a test knows the order), squashed into 0..1 like a sigmoid's output.
``delay_s``, ``fail_status`` and ``api_key`` make it slow, failing or guarded.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_CLIENT_BATCH_SIZE = 32
_WORD = re.compile(r"\w{3,}")


def relevance(query: str, text: str) -> float:
    """This server's score of ``text`` for ``query``: the share of the query's words in it, in 0..1."""
    wanted = set(_WORD.findall(query.lower()))
    found = set(_WORD.findall(text.lower()))
    return round(len(wanted & found) / len(wanted), 6) if wanted else 0.0


class RerankServer:
    """A TEI-compatible reranker on loopback, served from a daemon thread (a context manager)."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.delay_s = 0.0
        self.fail_status: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RerankServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._asgi, interface="asgi3", lifespan="off", log_level="warning", access_log=False, http="h11")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the rerank server did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = self._server.force_exit = True
            self._thread.join(timeout=10)

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> JSONResponse:
        if request.url.path != "/rerank" or request.method != "POST":
            return JSONResponse({"error": "Not Found", "error_type": "NotFound"}, status_code=404)
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "Unauthorized", "error_type": "Unauthorized"}, status_code=401)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "Failed to parse the request body as JSON", "error_type": "Validation"}, status_code=422)
        self.requests.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return JSONResponse({"error": "model overloaded", "error_type": "Overloaded"}, status_code=self.fail_status)
        query, texts = body.get("query"), body.get("texts")
        if not isinstance(query, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return JSONResponse({"error": "missing field `query` or `texts`", "error_type": "Validation"}, status_code=422)
        if not texts:
            return JSONResponse({"error": "`texts` cannot be empty", "error_type": "Validation"}, status_code=422)
        if len(texts) > MAX_CLIENT_BATCH_SIZE:
            return JSONResponse({"error": f"batch size {len(texts)} > maximum allowed batch size {MAX_CLIENT_BATCH_SIZE}",
                                 "error_type": "Validation"}, status_code=413)
        scored = [{"index": i, "score": relevance(query, text)} for i, text in enumerate(texts)]
        return JSONResponse(sorted(scored, key=lambda item: -item["score"]))
