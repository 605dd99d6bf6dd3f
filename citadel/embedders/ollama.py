"""Ollama embedder: batched ``/api/embed``, with the legacy ``/api/embeddings`` for old servers."""

from __future__ import annotations

from typing import Any

from citadel.embedders.http import HttpEmbedder, error_message
from citadel.embedders.models import base_model_name
from citadel.errors import EmbedderError


class OllamaEmbedder(HttpEmbedder):
    """Embeds through one or more Ollama servers, spreading batches over them."""

    kind = "ollama"
    url_setting = "CITADEL_OLLAMA_URLS"

    def __init__(self, model: str = "nomic-embed-text", urls: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(model, ["http://localhost:11434"] if urls is None else urls, **kwargs)
        self._legacy: set[str] = set()

    async def _request_batch(self, url: str, texts: list[str]) -> list[list[float]]:
        if url in self._legacy:
            return [await self._legacy_one(url, text) for text in texts]
        response = await self._post(f"{url}/api/embed", {"model": self.model, "input": texts, "truncate": True})
        if response.status_code == 404 and "model" not in error_message(response).lower():
            # A server older than /api/embed (Ollama < 0.3): fall back to one prompt per request.
            self._legacy.add(url)
            return [await self._legacy_one(url, text) for text in texts]
        self._raise_for(response, url)
        embeddings = self._json_body(response, url).get("embeddings")
        if not isinstance(embeddings, list):
            raise EmbedderError(f"{url}/api/embed returned no 'embeddings' list", backend=True)
        return embeddings

    async def _legacy_one(self, url: str, text: str) -> list[float]:
        response = await self._post(f"{url}/api/embeddings", {"model": self.model, "prompt": text})
        self._raise_for(response, url)
        embedding = self._json_body(response, url).get("embedding")
        if embedding == [] and not text:
            return [0.0] * self.dimensions  # old servers embed an empty prompt as an empty list
        if not isinstance(embedding, list):
            raise EmbedderError(f"{url}/api/embeddings returned no 'embedding' list", backend=True)
        return embedding

    async def available_models(self, url: str) -> list[str]:
        response = await self._send("GET", f"{url}/api/tags")
        self._raise_for(response, url)
        return [entry.get("name", "") for entry in self._json_body(response, url).get("models", [])]

    async def check(self) -> None:
        """Every server is reachable and has the model pulled."""
        wanted = {self.model, f"{self.model}:latest", base_model_name(self.model)}
        for url in self.urls:
            models = await self.available_models(url)
            if not wanted.intersection(models):
                raise EmbedderError(
                    f"model {self.model!r} is not available on {url} (it has: {', '.join(models) or 'none'}); "
                    f"run `ollama pull {self.model}` there",
                    status=404,
                )
