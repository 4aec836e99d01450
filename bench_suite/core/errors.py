"""Errors a user can cause, and nothing else.

    BenchSuiteError            anything the user can fix: the CLI prints one line, exits 2
     ├── UsageError            an unknown name or a malformed value on the command line
     ├── ResultsFileError      a file that is not a run, is truncated or has another schema
     └── OutputError           a path that cannot be written

Programming errors stay ordinary exceptions (and tracebacks): hiding them would hide bugs.
A failure *inside a case* (a wrong result, CUDA out of memory) is not an error at all: it is
recorded in the measurement with status ``failed`` and the run goes on.
"""

from __future__ import annotations


class BenchSuiteError(Exception):
    """Base of every error the CLI turns into one line and exit status 2."""

    exit_code = 2


class UsageError(BenchSuiteError):
    """An unknown name or a malformed value, usually from the command line."""


class ResultsFileError(BenchSuiteError):
    """A results file that cannot be read as a run (foreign, truncated, other schema)."""


class OutputError(BenchSuiteError):
    """An output path that does not exist or cannot be written."""
