"""Read deadlines for slow clients, which uvicorn lacks: it closes an idle kept-alive connection
(``timeout_keep_alive``), but waits forever for a request line, headers or a body that trickle in
a byte at a time (slowloris), each holding a socket.

:class:`ReadDeadlineProtocol` is uvicorn's httptools protocol with two deadlines: the request line
and headers must be in within ``CITADEL_API_HEADER_TIMEOUT_S`` of the connection (or, on a
kept-alive one, of the request's first byte), and the whole body within
``CITADEL_API_BODY_TIMEOUT_S`` of the headers; a connection that misses one is closed.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("citadel.api")


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol that closes a connection too slow to send its request."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    @classmethod
    def configure(cls, *, header_timeout_s: float, body_timeout_s: float) -> None:
        """Set the deadlines of every connection of this process (each worker sets its own)."""
        cls.header_timeout_s, cls.body_timeout_s = header_timeout_s, body_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "request line and headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout_s, "request line and headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, seconds: float, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("closing the connection of %s: its %s did not arrive within %gs", client, what, seconds)
            self.transport.close()
