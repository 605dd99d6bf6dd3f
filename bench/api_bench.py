"""Benchmarks of the HTTP API: load at 1000 concurrent users, a memory soak, the middleware's cost
per request, and micro-batching against a serial Ollama-protocol server.

    python -m bench.api_bench load --workers 2 --seconds 30     # wrk, 1000 connections: health and cached generate
    python -m bench.api_bench soak --workers 2 --seconds 600    # RSS at start, peak and end under the same load
    python -m bench.api_bench middleware                        # in-process: the stack's cost against a bare route
    python -m bench.api_bench batching --seconds 20             # 200 users, uncached: micro-batched vs one text a request

Needs wrk (Debian's `wrk`), the local Redis and Postgres. Results print as a table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from api.schemas import GenerateRequest, GenerateResponse
from citadel.testing.api_process import ApiProcess

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("CITADEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("CITADEL_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")

WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("CITADEL_BENCH_KEY")
{extra}
done = function(summary, latency, requests)
  io.write(string.format("JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d," ..
    "\\"status\\":%d,\\"timeout\\":%d,\\"p50_ms\\":%.2f,\\"p95_ms\\":%.2f,\\"p99_ms\\":%.2f,\\"max_ms\\":%.2f}}\\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


class RssSampler(threading.Thread):
    """Sums the resident memory of a process and its children every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def rss(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic(), self.rss()))
            self._done.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        values = [rss for _, rss in self.samples] or [0]
        return {"rss_start_mb": values[0] / 2**20, "rss_peak_mb": max(values) / 2**20, "rss_end_mb": values[-1] / 2**20}


async def _make_key(env: dict[str, str]) -> str:
    from citadel.apikeys import ApiKeys
    from citadel.registry import Registry
    from citadel.settings import Settings

    settings = Settings(data_dir=Path(env["CITADEL_DATA_DIR"]), database_url=env.get("CITADEL_DATABASE_URL"))
    registry = Registry(settings.registry_url)
    await registry.init()
    try:
        return (await ApiKeys(registry).create("bench", ["admin"])).key
    finally:
        await registry.aclose()


def shared_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env.update({
        "CITADEL_DATA_DIR": str(root / "data"), "CITADEL_REDIS_URL": REDIS_URL, "CITADEL_DATABASE_URL": POSTGRES_URL,
        # One key stands for every user here: the limits are lifted to measure capacity, and still checked per request.
        "CITADEL_API_RATE_LIMITS": "10000000/second", "PREFECT_LOGGING_LEVEL": "WARNING", **extra,
    })
    return env


# Every request a text never sent before (uncached): a counter per wrk thread, prefixed by the thread.
UNIQUE_TEXTS = """
local counter = 0
local started = 0
setup = function(thread)
  started = started + 1
  thread:set("thread_id", started)
end
init = function(args)
  prefix = tostring(thread_id) .. "-" .. tostring(os.time())
end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"text":"uncached ' .. prefix .. ' ' .. counter .. '"}')
end
"""


def wrk(url: str, key: str, method: str, body: str, seconds: float, connections: int, threads: int, extra: str = "") -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(method=method, body=body, extra=extra))
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "30s", "-s", script.name, url],
        capture_output=True, text=True, env={**os.environ, "CITADEL_BENCH_KEY": key}, check=True,
    )
    os.unlink(script.name)
    line = next(line for line in done.stdout.splitlines() if line.startswith("JSON "))
    result = json.loads(line[5:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def with_stack(workers: int, run: Any) -> Any:
    """Run ``run(api, key)`` against an API of ``workers`` processes on Redis, Postgres and a Qdrant REST server."""
    from citadel.testing.qdrant_process import start_qdrant_process, stop_qdrant_process

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        qdrant, qdrant_url = start_qdrant_process(root / "qdrant")
        try:
            env = shared_env(root, CITADEL_QDRANT_URL=qdrant_url)
            key = asyncio.run(_make_key(env))
            api = ApiProcess(env, root, args=["--workers", str(workers)]).start(timeout=120)
            try:
                httpx.post(f"{api.url}/api/v1/embeddings/generate", json={"text": "cached benchmark text"},
                           headers={"X-API-Key": key}, timeout=30).raise_for_status()
                return run(api, key)
            finally:
                api.stop()
        finally:
            stop_qdrant_process(qdrant)


def load(args: argparse.Namespace) -> dict[str, Any]:
    def run(api: ApiProcess, key: str) -> dict[str, Any]:
        assert api.proc is not None
        results: dict[str, Any] = {}
        for name, path, method, body in (
            ("health", "/api/v1/health", "GET", ""),
            ("generate_cached", "/api/v1/embeddings/generate", "POST", '{"text":"cached benchmark text"}'),
        ):
            for think_ms in args.think_ms:
                # think 0: every user sends again the moment it has its answer (saturation);
                # think 1000: each user sends about once a second, as people and services do.
                extra = f"delay = function() return {think_ms} end" if think_ms else ""
                sampler = RssSampler(api.proc.pid)
                sampler.start()
                result = wrk(api.url + path, key, method, body, args.seconds, args.connections, args.threads, extra=extra)
                result.update(sampler.stop())
                results[f"{name}_think_{think_ms}ms"] = result
        return results

    return with_stack(args.workers, run)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    def run(api: ApiProcess, key: str) -> dict[str, Any]:
        assert api.proc is not None
        sampler = RssSampler(api.proc.pid, every=5)
        sampler.start()
        think = args.think_ms[0]
        result = wrk(api.url + "/api/v1/embeddings/generate", key, "POST", '{"text":"cached benchmark text"}',
                     args.seconds, args.connections, args.threads, extra=f"delay = function() return {think} end" if think else "")
        time.sleep(2)
        result.update(sampler.stop())
        samples = sampler.samples
        tenth = max(1, len(samples) // 10)
        result["rss_first_tenth_mb"] = statistics.mean(r for _, r in samples[:tenth]) / 2**20
        result["rss_last_tenth_mb"] = statistics.mean(r for _, r in samples[-tenth:]) / 2**20
        return {"soak_generate_cached": result}

    return with_stack(args.workers, run)


async def _middleware(requests: int) -> dict[str, Any]:
    """Per request, in process: the full app (secure headers, request id, body checks, metrics, API
    key, rate limit) against a bare FastAPI route that does the same embedding lookup."""
    from api.app import create_app
    from citadel.apisettings import ApiSettings
    from citadel.settings import Settings

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for limiter in ("memory", "redis"):
            settings = Settings(data_dir=Path(tmp) / limiter, redis_url=REDIS_URL if limiter == "redis" else None)
            app = create_app(settings, ApiSettings(api_rate_limits="10000000/second"))
            async with app.router.lifespan_context(app):
                state = app.state.service
                key = (await state.keys.create("bench", ["embeddings"])).key
                bare = _bare_app(state.embedding)

                body = json.dumps({"text": "cached benchmark text"}).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                           (b"x-api-key", key.encode())]
                full_us = await _time_asgi(app, "/api/v1/embeddings/generate", body, headers, requests)
                bare_us = await _time_asgi(bare, "/g", body, headers[:2], requests)
                results[f"{limiter}_limiter"] = {"full_us": full_us, "bare_us": bare_us, "added_us": full_us - bare_us}
    return results


def _bare_app(embedding: Any) -> Any:
    """The generate route alone: no middleware, no credentials, no rate limit."""
    from fastapi import FastAPI

    bare = FastAPI()

    @bare.post("/g", response_model=GenerateResponse)
    async def generate(body: GenerateRequest) -> GenerateResponse:
        result = await embedding.embed([body.text], None)
        vector = result.vectors[0]
        return GenerateResponse(embedding=vector.tolist(), model=result.model, dimensions=len(vector), cached=True, duration_ms=0.0)

    return bare


async def _time_asgi(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]], requests: int) -> float:
    statuses: list[int] = []

    async def call() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    for _ in range(200):
        await call()  # warm up
    started = time.perf_counter()
    for _ in range(requests):
        await call()
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / requests * 1e6


def middleware(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_middleware(args.requests))


def batching(args: argparse.Namespace) -> dict[str, Any]:
    """200 users each sending one uncached text at a time to an API in front of one serial server."""
    results: dict[str, Any] = {"server": {"per_request_ms": args.per_request_ms, "per_text_ms": args.per_text_ms}}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.embedding_server", "--serial", f"{args.per_request_ms / 1000},{args.per_text_ms / 1000}"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        server_url = server.stdout.readline().strip().split("=", 1)[1]
        for mode, max_texts in (("micro_batched", "64"), ("one_text_per_request", "1")):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                env = shared_env(root, CITADEL_EMBEDDER="ollama", CITADEL_OLLAMA_URLS=server_url, CITADEL_API_BATCH_MAX_TEXTS=max_texts)
                env.pop("CITADEL_REDIS_URL")  # in-process cache: every text is new anyway
                env.pop("CITADEL_DATABASE_URL")
                key = asyncio.run(_make_key(env))
                with ApiProcess(env, root) as api:
                    target = api.url + "/api/v1/embeddings/generate"
                    low = wrk(target, key, "POST", "", min(10.0, args.seconds), 1, 1, extra=UNIQUE_TEXTS)
                    high = wrk(target, key, "POST", "", args.seconds, args.users, 2, extra=UNIQUE_TEXTS)
                results[mode] = {"one_user": low, f"{args.users}_users": high}
    finally:
        server.terminate()
        server.wait()
    results["throughput_ratio"] = results["micro_batched"][f"{args.users}_users"]["rps"] / max(
        1e-9, results["one_text_per_request"][f"{args.users}_users"]["rps"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, seconds in (("load", 30), ("soak", 600)):
        p = sub.add_parser(name)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--seconds", type=int, default=seconds)
        p.add_argument("--connections", type=int, default=1000)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--think-ms", type=int, nargs="+", default=[1000, 0] if name == "load" else [1000])
    p = sub.add_parser("middleware")
    p.add_argument("--requests", type=int, default=5000)
    p = sub.add_parser("batching")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--per-request-ms", type=float, default=10.0)
    p.add_argument("--per-text-ms", type=float, default=1.2)
    args = parser.parse_args()
    result = {"load": load, "soak": soak, "middleware": middleware, "batching": batching}[args.command](args)
    print(json.dumps({"command": args.command, **vars(args), "result": result}, indent=2, default=str))


if __name__ == "__main__":
    main()
