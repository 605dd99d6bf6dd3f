"""Serving the app with uvicorn: workers, TLS 1.2+ with Mozilla's intermediate ciphers, graceful
shutdown, and Prometheus multiprocess mode when several workers share a port."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import ssl
import tempfile
import threading
from pathlib import Path
from types import FrameType

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from api.app import create_app
from api.readdeadlines import ReadDeadlineProtocol
from api.state import CANCEL_S, RUN_GRACE_S
from citadel import logs
from citadel.apisettings import ApiSettings
from citadel.errors import ConfigurationError
from citadel.settings import Settings
from deployments.localprefect import guard_local_prefect_server

# https://wiki.mozilla.org/Security/Server_Side_TLS, "intermediate" (TLS 1.3 suites are not configurable here).
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
GRACEFUL_S = 30
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this
WORKER_PING_S = 60  # a worker silent this long is hung, and is replaced


def app_factory() -> object:
    """For uvicorn's workers, which import the app by name: each builds its own from the environment."""
    guard_local_prefect_server()  # a worker is a process of its own: the local Prefect server it may start ends with it
    api = ApiSettings()
    ReadDeadlineProtocol.configure(header_timeout_s=api.api_header_timeout_s, body_timeout_s=api.api_body_timeout_s)
    return create_app(api=api, tls=bool(os.environ.get("CITADEL_API_TLS")))


class TlsConfig(uvicorn.Config):
    """uvicorn's configuration with TLS below 1.2 refused outright (Python's default floor can be
    lowered by the system's OpenSSL policy)."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def uvicorn_log_config(log_format: str) -> dict[str, object]:
    """uvicorn's own logging (server and access lines) in the service's format, secrets masked."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "citadel.logs.RedactingFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    if log_format == "json":
        config["formatters"] = {name: {"()": "citadel.logs.JsonFormatter"} for name in config["formatters"]}
    return config


def preflight(settings: Settings) -> None:
    """What would stop the service at start, as one clear error before uvicorn starts: the
    embedded store held by another process, a registry that cannot be opened."""
    import asyncio

    from citadel.registry import Registry
    from citadel.store import embedded_store_holder, store_in_use

    if not settings.qdrant_url:
        holder = embedded_store_holder(settings.qdrant_path)
        if holder:
            raise ConfigurationError(store_in_use(settings.qdrant_path, holder))

    async def open_registry() -> None:
        registry = Registry(settings.registry_url)
        try:
            await registry.init()
        finally:
            await registry.aclose()

    asyncio.run(open_registry())


def _exit_after_drain(signum: int, frame: object) -> None:
    raise SystemExit(0)


EXIT_DEADLINE_S = GRACEFUL_S + RUN_GRACE_S + CANCEL_S + 10
"""The drain's longest time, with room to close the backends: a process still there after it exits at once."""


def _exit_now() -> None:
    os.write(2, f"the shutdown did not end within {EXIT_DEADLINE_S}s of the signal (something hung); exiting now\n".encode())
    os._exit(0)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a last resort: whatever hangs in the drain (a run that ignores its
    cancellation, a backend that never answers its close), the process ends EXIT_DEADLINE_S after
    the first SIGTERM or SIGINT."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            timer = threading.Timer(EXIT_DEADLINE_S, _exit_now)
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)


def serve(
    *, host: str, port: int, workers: int = 1, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
    log_level: str = "info",
) -> None:
    """Run the service until SIGINT/SIGTERM; in-flight requests get GRACEFUL_S seconds to finish."""
    settings = Settings()
    logs.configure(settings.log_format, log_level)
    api = ApiSettings()
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ConfigurationError("TLS needs both --ssl-certfile and --ssl-keyfile")
    for path in (ssl_certfile, ssl_keyfile):
        if path and not Path(path).is_file():
            raise ConfigurationError(f"{path} is not a readable file")
    if workers > 1 and not settings.qdrant_url:
        raise ConfigurationError(
            "--workers above 1 needs CITADEL_QDRANT_URL: the embedded vector store admits one process; "
            "run one worker on the embedded defaults, or point Citadel at a Qdrant server"
        )
    preflight(settings)
    tls = ssl_certfile is not None
    ReadDeadlineProtocol.configure(header_timeout_s=api.api_header_timeout_s, body_timeout_s=api.api_body_timeout_s)
    common = dict(
        host=host, port=port, log_level=log_level, log_config=uvicorn_log_config(settings.log_format),
        access_log=False, server_header=False, date_header=True,  # the middleware logs each request, with its id
        timeout_graceful_shutdown=GRACEFUL_S, proxy_headers=False,  # the app reads X-Forwarded-For from trusted proxies itself
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, ssl_ciphers=MOZILLA_INTERMEDIATE,
        # Slow clients are closed: idle kept-alive connections by uvicorn, slow headers and bodies by the protocol.
        http=f"{ReadDeadlineProtocol.__module__}:{ReadDeadlineProtocol.__name__}", timeout_keep_alive=KEEP_ALIVE_S,
    )
    multiproc_dir = None
    try:
        if workers > 1:
            os.environ["CITADEL_API_TLS"] = "1" if tls else ""
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                multiproc_dir = tempfile.mkdtemp(prefix="citadel-prometheus-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
            # uvicorn replaces a worker that does not answer its ping within this time; its default
            # (5 s) is shorter than a worker's start (imports, the app) on a loaded machine, and a
            # worker killed while starting is replaced by one that starts as slowly: none serves.
            config = TlsConfig(
                "api.server:app_factory", factory=True, workers=workers, timeout_worker_healthcheck=WORKER_PING_S,
                **common,  # type: ignore[arg-type]
            )
        else:
            config = TlsConfig(create_app(settings, api, tls=tls), **common)  # type: ignore[arg-type]
        server = DrainingServer(config)
        # uvicorn drains on SIGTERM, then sends the signal again to the handler it found: make that an
        # ordinary exit, so exit handlers run (Prefect's local server is stopped, coverage is saved).
        signal.signal(signal.SIGTERM, _exit_after_drain)
        if workers > 1:
            sock = config.bind_socket()
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run()
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
