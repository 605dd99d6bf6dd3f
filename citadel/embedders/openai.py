"""Embedder for any OpenAI-compatible ``/v1/embeddings`` server (TEI, vLLM, llama.cpp, Infinity)."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from citadel.embedders.http import HttpEmbedder
from citadel.errors import EmbedderError


class OpenAIEmbedder(HttpEmbedder):
    """Posts batches to ``{base_url}/embeddings``; the API key goes in a bearer header, never in logs."""

    kind = "openai"
    url_setting = "CITADEL_OPENAI_BASE_URL"

    def __init__(
        self,
        model: str,
        base_urls: list[str] | None = None,
        *,
        api_key: SecretStr | str | None = None,
        **kwargs: Any,
    ) -> None:
        secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        super().__init__(model, ["http://localhost:8080/v1"] if base_urls is None else base_urls, headers=headers, **kwargs)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(model={self.model!r}, urls={self.urls!r})"

    async def _request_batch(self, url: str, texts: list[str]) -> list[list[float]]:
        response = await self._post(f"{url}/embeddings", {"model": self.model, "input": texts})
        self._raise_for(response, url)
        data = self._json_body(response, url).get("data")
        if not isinstance(data, list) or not all(
            isinstance(item, dict) and isinstance(item.get("embedding"), list) for item in data
        ):
            raise EmbedderError(f"{url}/embeddings returned no 'data' list of embeddings", backend=True)
        ordered = sorted(data, key=lambda item: item.get("index", 0))
        return [item["embedding"] for item in ordered]

    async def check(self) -> None:
        """The server answers an embedding request for the model with the expected size."""
        for url in self.urls:
            self._check_vectors(await self._request_batch(url, ["ping"]), 1)
