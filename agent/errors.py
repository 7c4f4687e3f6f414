"""The one error hierarchy: each error carries its HTTP status and a sentence for the client."""

from __future__ import annotations

from .containers.errors import ProbeError

__all__ = [
    "AgentError", "BadRequest", "Busy", "ConfigError", "InsufficientStorage", "NotFound",
    "ProbeError", "RequestTimeout", "StartupError", "Unauthorized",
]  # fmt: skip


class AgentError(Exception):
    """An error with a client-facing message and the HTTP status it is rendered with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(AgentError):
    status = 400


class Unauthorized(AgentError):
    status = 401


class NotFound(AgentError):
    status = 404


class RequestTimeout(AgentError):
    status = 408


class Busy(AgentError):
    """No capacity right now; the client should retry after `retry_after` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientStorage(AgentError):
    status = 507


class ConfigError(Exception):
    """A bad configuration: the message names the key, the value and what is expected."""


class StartupError(Exception):
    """The agent cannot start (its index is locked by another process, say): one line."""
