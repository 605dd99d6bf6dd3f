"""WordLlama: a static semantic embedder whose weights ship in its wheel, so it runs in-process with
nothing to download and no server.

A text's vector is the average of its tokens' vectors (256 dimensions, from the token embeddings
of a large language model, trained for similarity). The package's own loader looks for its
tokenizer in a cache folder and then downloads it; this loads the tokenizer and the weights
straight from the installed package's files and never opens a connection.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from citadel import metrics
from citadel.embedders.base import normalise_rows
from citadel.errors import ConfigurationError

IN_PROCESS = "in-process"
DIMENSIONS = 256
CONFIG = "l2_supercat"
_TEXTS_PER_PASS = 64  # texts padded together: a pass's memory is texts x longest x 256 floats
_MAX_TOKENS = 2048

_model: tuple[Any, np.ndarray] | None = None
_model_lock = threading.Lock()


def package_files() -> tuple[Path, Path]:
    """The tokenizer and the 256-dimension weights inside the installed ``wordllama`` package."""
    spec = importlib.util.find_spec("wordllama")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("the wordllama embedder needs the wordllama package: pip install wordllama")
    folder = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = folder / "tokenizers" / f"{CONFIG}_tokenizer_config.json"
    weights = folder / "weights" / f"{CONFIG}_{DIMENSIONS}.safetensors"
    for path in (tokenizer, weights):
        if not path.is_file():
            raise ConfigurationError(f"the installed wordllama package has no {path.name}; reinstall it (pip install wordllama)")
    return tokenizer, weights


def _load() -> tuple[Any, np.ndarray]:
    """The tokenizer and the token embedding matrix, read once per process."""
    global _model
    with _model_lock:
        if _model is None:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer

            tokenizer_file, weights_file = package_files()
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            tokenizer.enable_padding()
            tokenizer.enable_truncation(_MAX_TOKENS)
            tensors = load_file(str(weights_file))
            matrix = np.ascontiguousarray(next(iter(tensors.values())), dtype=np.float32)
            _model = (tokenizer, matrix)
        return _model


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised mean token vectors of ``texts`` (an empty text's row stays zero)."""
    tokenizer, matrix = _load()
    out = np.zeros((len(texts), matrix.shape[1]), dtype=np.float32)
    for start in range(0, len(texts), _TEXTS_PER_PASS):
        encoded = tokenizer.encode_batch(list(texts[start : start + _TEXTS_PER_PASS]), add_special_tokens=False)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        if ids.size == 0:
            continue
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        np.clip(ids, 0, matrix.shape[0] - 1, out=ids)
        summed = np.einsum("bt,btd->bd", mask, matrix[ids], dtype=np.float32)
        out[start : start + len(encoded)] = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
    return normalise_rows(out)


class WordLlamaEmbedder:
    """The WordLlama ``l2_supercat`` model at 256 dimensions, in-process."""

    def __init__(self, dimensions: int | None = None) -> None:
        if dimensions not in (None, DIMENSIONS):
            raise ValueError(f"the wordllama embedder makes {DIMENSIONS}-dimensional vectors, not {dimensions}")
        self.dimensions = DIMENSIONS
        self.model = f"wordllama-{CONFIG}-{DIMENSIONS}d"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = await asyncio.to_thread(embed_texts, list(texts))  # numpy releases the GIL in its loops
        metrics.EMBED_REQUESTS.labels(IN_PROCESS, self.model).inc()
        metrics.EMBED_TEXTS.labels(IN_PROCESS, self.model).inc(len(texts))
        metrics.EMBED_LATENCY.labels(IN_PROCESS, self.model).observe(time.perf_counter() - started)
        return vectors

    async def check(self) -> None:
        await asyncio.to_thread(_load)

    async def aclose(self) -> None:
        return None
