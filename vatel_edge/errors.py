"""The one exception tree of vatel-edge: every error the daemon expects derives from VatelEdgeError."""

from __future__ import annotations


class VatelEdgeError(Exception):
    """Base of every error vatel-edge raises on purpose."""


class ConfigError(VatelEdgeError):
    """The configuration is invalid; the message names the key path and the problem."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ProtocolError(VatelEdgeError):
    """A Vatel message is malformed (bad JSON, wrong types, bad base64, oversize...)."""


class TokenError(VatelEdgeError):
    """The session-token endpoint did not give us a usable token."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class SessionError(VatelEdgeError):
    """The voice WebSocket could not be opened or failed."""


class AudioDeviceError(VatelEdgeError):
    """An ALSA device failed to open, vanished, or refused every usable format."""


class ToolError(VatelEdgeError):
    """A tool call could not be run (bad arguments, failed action)."""


class GpioError(ToolError):
    """A GPIO line could not be found, requested or used; the message names chip and line.

    A ToolError, since tools were its first users and every caller that reports one catches ToolError.
    """


class ControlError(VatelEdgeError):
    """The local control socket could not be reached or answered badly."""


class DaemonFailure(VatelEdgeError):
    """A core part of the daemon failed (the microphone path): `vatel-edge run` exits non-zero
    so that systemd restarts the service, instead of a daemon that can no longer hear pretending to run."""
