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


def stop_group(process: subprocess.Popen, timeout_s: float = 30, *, leftovers: bool = False) -> None:
    """SIGTERM to the whole process group of `process` (started with start_new_session), SIGKILL after `timeout_s`;
    with `leftovers`, SIGKILL the group whatever the leader did (workers that outlive it)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout_s)
        exited = True
    except subprocess.TimeoutExpired:
        exited = False
    if leftovers or not exited:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout_s)


@contextmanager
def server_process(command: list[str], log: IO, cwd: os.PathLike | str, env: dict[str, str] | None = None,
                   stop_timeout_s: float = 30) -> Iterator[subprocess.Popen]:
    """`command` running until the block ends; then its whole process group stopped (`stop_group`), the workers
    whatever the parent did."""
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=log, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, stop_timeout_s, leftovers=True)
