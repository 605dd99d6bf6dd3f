"""Benchmark: the CPU an embedding client spends per text, against a server that answers at once.

With a GPU server thousands of texts a second come back as JSON; what the client does with them
(build the request, read the answer, parse it into a float32 matrix) is the pipeline's largest
stage at that speed. This embeds ``--texts`` chunk-sized texts through ``OllamaEmbedder`` (two
requests in flight, as the flow runs it) against the Ollama-protocol test server in a process of
its own with no delay, and reports this process's CPU seconds per 10,000 texts. Usage:

    .venv/bin/python -m bench.embed_client_bench --texts 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

from bench.phases_bench import REPO


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(url: str, texts: list[str], batch: int) -> dict[str, float]:
    from citadel.embedders import OllamaEmbedder

    embedder = OllamaEmbedder("nomic-embed-text", [url], batch_size=batch, requests_per_server=2)
    await embedder.embed(texts[:batch])  # connect and warm up
    started, cpu = time.perf_counter(), cpu_s()
    vectors = await embedder.embed(texts)
    wall, used = time.perf_counter() - started, cpu_s() - cpu
    await embedder.aclose()
    assert vectors.shape == (len(texts), 768)
    return {"texts": len(texts), "wall_s": round(wall, 3), "cpu_s": round(used, 3),
            "cpu_s_per_10k_texts": round(used / len(texts) * 10_000, 3), "texts_per_s": round(len(texts) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.embedding_server", "--serial", "0,0"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip().split("=", 1)[1]
        texts = [f"Chunk {i}: " + " ".join(f"word{(i * 7 + j) % 5000}" for j in range(150)) for i in range(args.texts)]
        print(json.dumps(asyncio.run(run(url, texts, args.batch))))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
