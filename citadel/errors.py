"""Error types that say what went wrong and what to do about it."""

from __future__ import annotations


class CitadelError(Exception):
    """Base class of every error Citadel raises on purpose."""


class ConfigurationError(CitadelError, ValueError):
    """Bad settings or usage: fix the configuration and run again (never retried)."""


class CollectionMismatchError(ConfigurationError):
    """A collection holds vectors of another model or size; mixing them would corrupt search."""


class CollectionNotFound(ConfigurationError):
    """No collection of that name (nor a version it serves) is registered: nothing was indexed into it yet."""

    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} does not exist yet; index something into it first")
        self.collection = collection


class VersionCheckFailed(CitadelError):
    """A blue-green build does not hold what its registry says, so its alias was not switched to it."""


class DocumentError(CitadelError):
    """One document cannot be indexed; it goes to the dead letters and the run goes on."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class EmbedderError(CitadelError):
    """An embedding server answered with an error.

    ``status`` is the HTTP status (None for connection failures); ``transient`` says whether
    retrying the same request later may succeed (connection errors, 429 and 5xx); ``backend``
    says the server's answers do not fit the configuration (wrong vector size or count, not
    JSON), which blames the backend, never one document.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False, backend: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.backend = backend
        self.message = message


class EmbedderUnreachable(EmbedderError, ConfigurationError):
    """No configured embedding server accepts connections: a configuration problem (a wrong URL, a
    server not started), reported at once instead of retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, backend=True)


class InputTooLongError(EmbedderError):
    """The server rejected an input as longer than the model's context."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying the failed operation later may succeed."""
    if isinstance(exc, EmbedderError):
        return exc.transient
    if isinstance(exc, (ConfigurationError, DocumentError, ValueError, TypeError, KeyError)):
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))
