"""Progress bars for the pipeline's long commands (training, evaluation, export, the catalog's), never for serving:
tqdm on stderr, so stdout keeps the commands' own lines and results.

On a terminal a bar is tqdm's own, redrawn in place. Where stderr is not a terminal (a background run, `... >
run.log 2>&1`), carriage-return redraws would pile up in the log as one endless line, and tqdm's `disable=None`
would show nothing for the minutes a run is silent; so there a bar writes a plain line at most once a minute
(LOG_INTERVAL_S), and nothing at all for a bar done within its first minute: a log gains a line a minute during a
long step, and stays as it was for short ones. `TQDM_DISABLE=1` in the environment turns every bar off (tqdm
reads its TQDM_* settings from there)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

LOG_INTERVAL_S = 60.0
"""Where stderr is not a terminal: the least time between two lines of one bar, and how long a bar runs before
its first line."""

_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")

T = TypeVar("T")


class LogLines:
    """A stream for tqdm that writes each redraw as a line of its own: no carriage returns or cursor moves in a
    log file; the blank redraws tqdm uses to clear a bar are dropped."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = _CONTROL.sub("", text).strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             leave: bool = True, stream: TextIO | None = None) -> tqdm:
    """A tqdm bar on `stream` (stderr), as the module docstring says: redrawn in place on a terminal, a line a
    minute elsewhere. Iterate it, or `update(n)` it in a `with` block. `leave=False` for a bar inside a loop that
    prints its own line when the bar is done (an epoch's steps)."""
    stream = stream or sys.stderr
    options: dict[str, Any] = {"desc": desc, "total": total, "unit": unit, "leave": leave, "dynamic_ncols": True}
    if not (hasattr(stream, "isatty") and stream.isatty()):
        options.update(file=LogLines(stream), mininterval=LOG_INTERVAL_S, delay=LOG_INTERVAL_S, dynamic_ncols=False)
    else:
        options["file"] = stream
    return tqdm(iterable, **options)
