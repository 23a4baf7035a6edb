"""The pipeline's progress bars (pipeline.core.progress): tqdm's own on a terminal; in a log file plain lines, at
most one a LOG_INTERVAL_S, none for a bar done sooner; and the photo passes of evaluation, export and the catalog's
evaluation counting their photos through one bar (pipeline.evaluation.evaluate.photo_pass)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core import progress as progress_module
from pipeline.core.paths import REPO_ROOT
from pipeline.core.photo_to_answer import Classified, ModelFacts
from pipeline.core.progress import LogLines, progress
from pipeline.core.settings import serving_settings
from pipeline.evaluation.evaluate import photo_pass


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_bar_writes_whole_lines_without_carriage_returns(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)  # every update drawn
    log = io.StringIO()
    assert list(progress(range(3), desc="epoch 1/2", unit="step", stream=log)) == [0, 1, 2]
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("epoch 1/2:") for line in lines), lines
    assert "3/3" in lines[-1]


def test_in_a_log_a_bar_done_within_the_interval_writes_nothing():
    log = io.StringIO()
    with progress(desc="decoding", total=5, unit="photo", stream=log) as bar:
        bar.update(5)
    assert log.getvalue() == ""


def test_on_a_terminal_the_bar_is_redrawn_in_place():
    terminal = Terminal()
    for _ in progress(range(2), desc="scoring", stream=terminal):
        pass
    assert "\r" in terminal.getvalue() and "scoring" in terminal.getvalue()


def test_tqdm_disable_in_the_environment_turns_the_bars_off():
    """tqdm reads its TQDM_* defaults when it is imported: a fresh interpreter, its stderr a terminal-like stream."""
    code = ("import io; from pipeline.core.progress import progress\n"
            "class Terminal(io.StringIO):\n    def isatty(self): return True\n"
            "out = Terminal(); list(progress(range(2), desc='scoring', stream=out)); print(repr(out.getvalue()))")
    shown = {setting: subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                                     env=os.environ | {"TQDM_DISABLE": setting}).stdout.strip()
             for setting in ("1", "")}
    assert shown["1"] == "''" and "scoring" in shown[""], shown


def test_log_lines_drop_the_blank_redraws_that_clear_a_bar():
    log = io.StringIO()
    stream = LogLines(log)
    for text in ("\r", "\rdecoding:  50%|#####     | 1/2", "\x1b[A", "   ", "\n"):
        stream.write(text)
    assert log.getvalue() == "decoding:  50%|#####     | 1/2\n"


def test_a_photo_pass_counts_its_photos_through_one_bar(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    updates: list[int] = []
    real_progress = progress_module.progress

    def recording(*args, **kwargs):
        bar = real_progress(*args, stream=io.StringIO(), **kwargs)
        update = bar.update
        bar.update = lambda n=1: updates.append(n) or update(n)
        return bar

    monkeypatch.setattr("pipeline.evaluation.evaluate.progress", recording)
    paths = []
    for i in range(20):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (64, 48), (10 * i, 0, 0)).save(paths[-1])
    facts = ModelFacts(["a", "b"], classifier_input_size=16, detector_input_size=64)

    def classify(crops: list[np.ndarray]) -> Classified:
        return Classified(np.tile([0.7, 0.3], (len(crops), 1)).astype(np.float32), None)

    recognized = photo_pass(facts, None, classify, paths, serving_settings(), "test photos")
    assert len(recognized) == 20
    assert updates == [16, 4]  # PhotoToAnswer.run_files' batches
