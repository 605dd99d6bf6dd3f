"""The one set of backends and service objects of an API process, opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import Depends, Request

from api.embedding import EmbeddingService
from api.health import HealthChecker
from api.ratelimit import RateLimiter
from citadel.apikeys import ApiKeys
from citadel.apisettings import ApiSettings, Network
from citadel.audit import AuditLog
from citadel.auth import TokenVerifier
from citadel.documents import SourceRoots
from citadel.resources import Resources, open_resources
from citadel.settings import Settings, secret
from orchestration.prefect_metrics import PrefectFigures
from orchestration.workflow_runs import RunHere, prefect_api_url

log = logging.getLogger("citadel.api")
RUN_GRACE_S = 10.0
"""How long workflow runs started in the process get to finish at shutdown before they are cancelled."""
CANCEL_S = 5.0
"""How long cancelled workflow runs get to end at shutdown before the process exits without them."""


class ServiceState:
    """Settings, backends, credentials, limits and background runs of one API process."""

    def __init__(self, settings: Settings, api: ApiSettings) -> None:
        self.settings = settings
        self.api = api
        self.started_at = time.time()
        self.trusted_proxies: list[Network] = api.network_list("api_trusted_proxies")
        self.exempt: list[Network] = api.network_list("api_rate_limit_exempt")
        self.admin_allow: list[Network] = api.network_list("api_admin_allow")
        self.admin_deny: list[Network] = api.network_list("api_admin_deny")
        self.verifier = TokenVerifier(api)
        self.sandbox = SourceRoots.of(api.sandbox)  # a bucket entry that names no bucket fails the start, in one line
        self.limiter = RateLimiter(api.api_rate_limits, secret(settings.redis_url), on_redis_down=api.rate_limit_on_redis_down)
        self.prefect_api_url = prefect_api_url()
        self.has_credentials_configured = self.verifier.enabled
        self.runs_here: dict[str, RunHere] = {}  # workflow runs executing in this process, by flow run id
        self.prefect_figures: PrefectFigures | None = None  # the flow-run metrics, with a Prefect API
        self._warmup: asyncio.Task[None] | None = None
        self._stack = AsyncExitStack()
        self.resources: Resources
        self.embedding: EmbeddingService
        self.health: HealthChecker
        self.keys: ApiKeys
        self.audit: AuditLog

    @property
    def embedded_store(self) -> bool:
        return not self.settings.qdrant_url

    async def open(self) -> None:
        """Open the backends once: the registry (so keys can be checked), the embedder and cache,
        and on the embedded defaults the vector store, which this process then holds."""
        leave_sigterm_to_the_service()
        self.resources = await self._stack.enter_async_context(open_resources(self.settings))
        registry = await self.resources.registry()
        self.keys = ApiKeys(registry)
        self.audit = AuditLog(registry)
        self._stack.push_async_callback(self.audit.drain)
        self.has_credentials_configured = self.verifier.enabled or bool(await self.keys.list())
        self.embedding = EmbeddingService(self.resources, self.api)
        self._stack.push_async_callback(self.embedding.aclose)
        self.health = HealthChecker(
            self.resources, self.prefect_api_url, timeout_s=self.api.api_health_timeout_s, cache_s=self.api.api_health_cache_s
        )
        self._stack.push_async_callback(self.health.aclose)
        if self.prefect_api_url:
            self.prefect_figures = PrefectFigures(self.prefect_api_url, timeout_s=self.api.api_health_timeout_s)
            self._stack.push_async_callback(self.prefect_figures.aclose)
        self._stack.push_async_callback(self.limiter.aclose)
        if self.embedded_store:
            _ = self.resources.store  # taken now: a CLI run on this data folder is told at once who holds it
        if not self.prefect_api_url:
            # Without a Prefect server, runs are recorded on a local one that Prefect starts on first
            # use (seconds): started now, in the background, not on the first workflow request.
            self._warmup = asyncio.create_task(_start_local_prefect())

    async def prefect_ready(self) -> None:
        """Wait for the local Prefect server's start when it is under way: a client asking for it
        meanwhile would start it a second time, which Prefect refuses ("Server process did not start")."""
        if self._warmup is not None and not self._warmup.done():
            await asyncio.shield(self._warmup)

    async def close(self, grace_s: float = RUN_GRACE_S) -> None:
        """Let runs started here finish for ``grace_s``, cancel the rest, then close the backends."""
        running = {run.task: run for run in self.runs_here.values() if not run.task.done()}
        if running:
            log.info("waiting up to %.0fs for %d workflow run(s) started here", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            if pending:
                log.info("cancelling %d workflow run(s) still running; submit them again", len(pending))
                for task in pending:
                    running[task].cancel_request.set()  # each ends Cancelled, recorded by its engine
                _, stuck = await asyncio.wait(pending, timeout=CANCEL_S)
                for task in stuck:  # a run that does not stop when asked must not hold the shutdown
                    task.cancel()
                if stuck:
                    log.warning("%d workflow run(s) did not stop within %.0fs of being cancelled; exiting anyway", len(stuck), CANCEL_S)
        await self._stack.aclose()
        if self._warmup is not None:
            self._warmup.cancel()
            await asyncio.gather(self._warmup, return_exceptions=True)
        if not self.prefect_api_url:
            await asyncio.to_thread(_stop_local_prefect)


def leave_sigterm_to_the_service() -> None:
    """While a flow runs, Prefect's engine swaps SIGTERM's handler for one that raises in whatever
    the main thread runs: in the API that is the event loop, so the signal failed an unrelated
    request or was lost, and the service never drained. Here the service owns SIGTERM: it drains,
    then cancels the runs it started (:meth:`ServiceState.close`), which end Cancelled."""
    import prefect.flow_engine

    setattr(prefect.flow_engine, "capture_sigterm", contextlib.nullcontext)  # noqa: B010 - a module's name, replaced on purpose


async def _start_local_prefect() -> None:
    """Start the local Prefect server in a thread of its own: Prefect waits for it to answer in a
    blocking loop, which on the event loop held the API's own start (and /livez) for as long. A
    daemon thread, so that a shutdown during a slow start does not wait for it (the default
    executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def reach() -> None:
        try:
            _reach_local_prefect()
            error: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - reported on the loop below
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, outcome, error)

    threading.Thread(target=reach, name="citadel-local-prefect", daemon=True).start()
    error = await outcome
    if error is not None:  # the first workflow request will say what is wrong
        log.warning("the local Prefect server did not start: %s", error)


def _settle(outcome: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not outcome.done():  # not cancelled by a shutdown meanwhile
        outcome.set_result(error)


def _reach_local_prefect() -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.api_healthcheck()


def _stop_local_prefect() -> None:
    """Stop the local Prefect server this process started. Prefect stops it at exit, but uvicorn
    ends on the signal it was sent, which skips exit handlers and would leave the server running."""
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()


async def service_state(request: Request) -> ServiceState:
    """The process's :class:`ServiceState`, as a route dependency (:data:`State`). Async so that
    FastAPI calls it on the event loop: it sends a sync dependency to its thread pool on every request."""
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(service_state)]
"""A route's parameter for the process's state, read once per request however many dependencies ask."""
