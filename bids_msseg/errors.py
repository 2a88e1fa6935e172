"""Exceptions that carry a user-facing message and, for the CLI, an exit code.

Exit codes follow the BIDS Apps execution spec and sysexits (../shared/docs/conventions.md):
16 validation failed, 17 unknown analysis level, 18 filters matched nothing, 64 usage error,
66 no input, 73 cannot create output. 1 means some runs failed (each has a crash report).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNS_FAILED = 1
EXIT_VALIDATION = 16
EXIT_UNKNOWN_LEVEL = 17
EXIT_NO_MATCH = 18
EXIT_USAGE = 64
EXIT_NO_INPUT = 66
EXIT_CANT_CREATE = 73


class MsSegError(Exception):
    """Base class: ``str(err)`` is the message shown to the user; ``exit_code`` for the CLI."""

    exit_code = EXIT_RUNS_FAILED


class InputError(MsSegError):
    """One input image or sidecar cannot be processed (corrupt, 4D, no brain, ...)."""

    exit_code = EXIT_RUNS_FAILED


class UsageError(MsSegError):
    """Bad command-line options or filter file."""

    exit_code = EXIT_USAGE


class NoInputError(MsSegError):
    """The dataset or the filters yield no FLAIR at all."""

    exit_code = EXIT_NO_INPUT


class NoMatchError(MsSegError):
    """Participant/session labels or filters matched nothing."""

    exit_code = EXIT_NO_MATCH


class ValidationError(MsSegError):
    """The input directory is not a valid BIDS dataset."""

    exit_code = EXIT_VALIDATION


class OutputError(MsSegError):
    """The output directory cannot be created or written, or is unsafe (equal to the input)."""

    exit_code = EXIT_CANT_CREATE
