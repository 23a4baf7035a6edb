"""A one-process server (the benchmark's peer and baseline) started in a session of its own and stopped with
everything it started: LitServe's workers are processes of their own that outlive a terminated parent, and a
benchmark that left them would skew the next run's CPU figures."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


@contextmanager
def server_process(command: list[str], log: IO, cwd: os.PathLike | str, env: dict[str, str] | None = None,
                   stop_timeout_s: float = 30) -> Iterator[subprocess.Popen]:
    """`command` running until the block ends; then SIGTERM to its whole process group, SIGKILL after the timeout."""
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        try:  # the workers, whatever the parent did
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=stop_timeout_s)
