"""Exceptions users see. Each message names the thing, the problem, and the fix."""

from __future__ import annotations


class EdgeLstmError(Exception):
    """Base of every error edge-lstm raises on purpose."""

    #: Process exit code when this error ends a command: 1 runtime failure, 2 usage/config.
    exit_code = 1


class BundleError(EdgeLstmError):
    """Raised when a bundle is missing, corrupt, or of a format this runtime does not know."""

    exit_code = 2


class BundleIntegrityError(BundleError):
    """Raised when a bundle file does not match its manifest hash: a corrupt copy or tampering.
    Never a reason to fall back to another variant quietly."""


class ConfigError(EdgeLstmError):
    """Raised when a config file, option or argument is invalid: one problem, or every problem
    a check found (one per line, each naming the file, the key, the expectation and the find)."""

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class BackendUnavailableError(EdgeLstmError):
    """Raised when the requested inference engine is not installed or cannot load a variant."""

    exit_code = 2


class SampleError(EdgeLstmError, ValueError):
    """Raised when a sample is rejected (NaN, wrong value count, ...); no state was touched."""

    def __init__(self, stream: str, problem: str) -> None:
        super().__init__(f"stream {stream!r}: {problem}")
        self.stream = stream
        self.problem = problem


class RolloutError(EdgeLstmError):
    """Raised when a signed bundle is refused (unsigned, wrongly signed, unknown key, tampered
    file, older version, malformed offer); `code` is the short reason published with it."""

    def __init__(self, code: str, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = problem
