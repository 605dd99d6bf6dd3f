"""Points to a Qdrant server, several batches at once, straight from their arrays.

qdrant-client builds a pydantic model of every point and converts each vector to a list of Python
floats before its JSON is written: at 768 dimensions that costs the writing process more CPU than
the server's work, on cores it shares with the embedding. Here each batch's body is written by
orjson from the float32 array and the payloads, and sent over Qdrant's REST API (``PUT
/collections/{name}/points``, a ``batch``), up to ``parallel`` batches at once, as Qdrant advises
for uploads (batches of 64 to 256 points, 2 to 4 in parallel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
import orjson

from citadel.errors import CitadelError
from citadel.store.lexical import LEXICAL_VECTOR, document_vector
from citadel.store.rest import collection_path, rest_options

Vectors = np.ndarray | Sequence[Sequence[float]]


class StoreError(CitadelError):
    """The Qdrant server refused a write (not worth retrying: the request itself is wrong)."""


def batch_body(ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]], lexical: bool) -> bytes:
    """The JSON of one ``points`` upsert: the dense vectors, and each point's lexical vector from its
    text when the collection keeps them."""
    dense = np.asarray(vectors, dtype=np.float32)
    named: Any = dense
    if lexical:
        sparse = []
        for payload in payloads:
            text = payload.get("text")
            terms = document_vector(text) if isinstance(text, str) else None
            sparse.append({"indices": terms.indices, "values": terms.values} if terms else {"indices": [], "values": []})
        named = {"": dense, LEXICAL_VECTOR: sparse}
    body = {"batch": {"ids": list(ids), "vectors": named, "payloads": list(payloads)}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class Uploader:
    """Upserts to one Qdrant server over its REST API: batches of ``batch_size``, ``parallel`` at once."""

    def __init__(self, url: str, api_key: str | None, *, batch_size: int, parallel: int, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.parallel = parallel
        self._options = rest_options(url, api_key, timeout_s)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """A client of the running event loop (a store outlives the loops of the runs that share it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(base_url=self.url, **self._options)
            self._loop = loop
        return self._client

    async def upsert(self, name: str, ids: Sequence[str], vectors: Vectors, payloads: Sequence[dict[str, Any]], lexical: bool) -> None:
        """Write every point and return once the server acknowledged each batch (``wait=true``)."""
        client, path = self._http(), f"{collection_path(name)}/points"
        gate = asyncio.Semaphore(self.parallel)

        async def send(start: int) -> None:
            end = start + self.batch_size
            async with gate:
                # Built on a worker thread: the lexical vectors and JSON of a batch take milliseconds
                # the event loop spends answering the embedding servers meanwhile.
                body = await asyncio.to_thread(batch_body, ids[start:end], vectors[start:end], payloads[start:end], lexical)
                try:
                    answer = await client.put(path, params={"wait": "true"}, content=body, headers={"content-type": "application/json"})
                except httpx.TransportError as exc:  # a connection error: the step's retries try again
                    raise ConnectionError(f"Qdrant at {self.url} did not answer an upsert to {name!r}: {exc!r}") from None
            if answer.status_code >= 500 or answer.status_code == 429:
                raise ConnectionError(f"Qdrant at {self.url} answered an upsert to {name!r} with {answer.status_code}: {answer.text[:300]}")
            if answer.status_code >= 400:
                raise StoreError(f"Qdrant at {self.url} refused an upsert to {name!r} ({answer.status_code}): {answer.text[:300]}")

        await asyncio.gather(*(send(start) for start in range(0, len(ids), self.batch_size)))

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
