"""The WordLlama embedder: the model's own vectors, semantic, from the package's files alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from citadel.embedders import WordLlamaEmbedder
from citadel.embedders.wordllama import package_files

TEXTS = ["Vitamin D deficiency raises the risk of fractures.", "short", "gluons " * 300, ""]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False)


async def test_vectors_are_the_wordllama_models_own() -> None:
    """The same vectors as the wordllama package's own inference (normalised), loaded its way."""
    folder = package_files()[1].parents[1]
    done = _python(f"""
        import json, logging
        from wordllama import WordLlama
        model = WordLlama.load(dim=256, cache_dir={str(folder)!r}, disable_download=True)
        print(json.dumps(model.embed({TEXTS[:3]!r}, norm=True).tolist()))
    """)
    assert done.returncode == 0, done.stderr
    theirs = np.array(json.loads(done.stdout.strip().splitlines()[-1]), dtype=np.float32)
    embedder = WordLlamaEmbedder()
    ours = await embedder.embed(TEXTS)
    assert ours.shape == (4, 256) and embedder.model == "wordllama-l2_supercat-256d"
    assert np.allclose(ours[:3], theirs, atol=1e-5)
    assert not ours[3].any()  # an empty text is a zero vector, not NaN


async def test_it_is_semantic() -> None:
    car, automobile, banana = await WordLlamaEmbedder().embed(["a fast car", "a quick automobile", "a ripe banana"])
    assert float(car @ automobile) > float(car @ banana) + 0.1


def test_it_loads_with_the_network_unreachable_and_leaves_logging_alone() -> None:
    done = _python("""
        import asyncio, logging, socket
        def unreachable(*args, **kwargs):
            raise OSError("network is unreachable")
        socket.socket.connect = unreachable
        socket.create_connection = unreachable
        from citadel.embedders import WordLlamaEmbedder
        vectors = asyncio.run(WordLlamaEmbedder().embed(["offline text"]))
        assert vectors.shape == (1, 256) and abs(float((vectors[0] ** 2).sum()) - 1) < 1e-5
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
