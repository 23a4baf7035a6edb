"""The pictures in docs/figures and the commands that draw them (pipeline.evaluation.figures, load_tests.benchmark_chart),
on tiny inputs made here: valid PNGs from an evaluation.json, training histories and a benchmark.json of the
shapes those commands save; a clear stop, naming the file, on a missing or foreign input; and every picture in
docs/figures, and the operator page's docs/ui.png (load_tests.ui_screenshot), shown by a doc that names the command
drawing it again."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from load_tests import benchmark_chart
from pipeline.classification_metrics import summarize
from pipeline.core.paths import REPO_ROOT
from pipeline.evaluation import figures
from pipeline.evaluation.report import ROWS

FIGURES = REPO_ROOT / "docs" / "figures"
MAX_PNG_BYTES = 300 * 1024
LABELS = ["Granny-Smith_ _ ", "Kiwi_ _ ", "Oat-Milk_carton_1l", "Carrots_ _ "]
DEPARTMENTS = ["Fruit", "Fruit", "Packages", "Vegetables"]


def evaluation_report(photos_per_class: int = 3, seed: int = 0) -> dict:
    """What pipeline.evaluation.evaluate writes, for four classes in three departments (the last class's photos
    are in no department folder when `photos_per_class` is 0 for it: not made here)."""
    rng = np.random.default_rng(seed)
    targets = np.repeat(np.arange(len(LABELS)), photos_per_class)
    rows = {}
    for row in ROWS:
        probabilities = rng.random((len(targets), len(LABELS))) + 2.0 * np.eye(len(LABELS))[targets]
        rows[row] = summarize(probabilities / probabilities.sum(axis=1, keepdims=True), targets, LABELS)
    answers = [{"path": f"../shared/data/grocery_store/val/{DEPARTMENTS[t]}/{LABELS[t].split('_')[0]}/{i}.jpg",
                "target": LABELS[t], "label": LABELS[t], "confidence": 0.9, "whole_photo": True} for i, t in enumerate(targets)]
    return {"data": "../shared/data/grocery_store (val)", "images": len(targets), "classes": len(LABELS), "rows": ROWS,
            "classifier": rows, "hello_policy": "whole_photo", "answers": answers}


def write_history(run: Path, epochs: int = 4, selection: bool = True, summary: dict | None = None) -> Path:
    """A run folder as pipeline.train.finetune leaves it: history.csv (and train_summary.json when given)."""
    run.mkdir(parents=True)
    with (run / "history.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "train_loss", "selection_top1", "selection_top5", "seconds", "average_top1", "average_top5"])
        for epoch in range(1, epochs + 1):
            top1 = f"{0.6 + 0.05 * epoch:.4f}" if selection else "nan"
            writer.writerow([epoch, f"{1.5 / epoch:.4f}", top1, top1, 100, top1 if selection else "nan", top1 if selection else "nan"])
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    return run


def benchmark_results() -> dict:
    row = {"images_per_s": 60.0, "p50_s": 0.25, "p99_s": 0.4, "statuses": {"200": 900}}
    return {"photos": 12, "phones": 4, "concurrency": 16, "duration_s": 15, "endpoint": "/hello",
            "served_runtimes": {"auto": row}, "served": row, "served_gathered": row | {"images_per_s": 70.0},
            "peer": row | {"images_per_s": 120.0, "p99_s": 0.16}, "floor": row | {"images_per_s": 150.0, "p50_s": 0.1},
            "raw": {"auto": {"8": {"images_per_s": 90.0, "ms_per_image": {}, "cpu": {"ours_cores": 1.0}}}},
            "sweep": {"1": row, "8": row | {"p99_s": 0.5}}}


def assert_png(path: Path, min_side: int = 300) -> None:
    assert path.is_file() and path.stat().st_size <= MAX_PNG_BYTES, path
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side, (path, image.size)
        image.verify()


def test_the_evaluation_pictures_are_drawn_from_its_json(tmp_path: Path, capsys):
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "evaluation.json").write_text(json.dumps(evaluation_report()))
    written = figures.main(["evaluation", str(tmp_path / "evaluation"), "--out", str(tmp_path / "figures")])
    assert written == [tmp_path / "figures" / "confusion_matrix.png", tmp_path / "figures" / "per_class_accuracy.png"]
    for path in written:
        assert_png(path)
    assert capsys.readouterr().out.split() == [str(path) for path in written]


def test_departments_are_read_from_the_photos_folders():
    report = evaluation_report()
    assert figures.departments(report, LABELS) == DEPARTMENTS
    for answer in report["answers"]:  # one folder per class: every class its own "department", none drawn
        answer["path"] = f"photos/{answer['target']}/x.jpg"
    assert figures.departments(report, LABELS) is None
    assert figures.departments({"answers": []}, LABELS) is None
    assert figures.display_name("Oat-Milk_carton_1l") == "Oat-Milk carton 1l" and figures.display_name("Kiwi_ _ ") == "Kiwi"


def test_a_class_without_photos_is_a_blank_row_and_left_out_of_the_bars(tmp_path: Path):
    report = evaluation_report()
    keep = [a for a in report["answers"] if a["target"] != LABELS[1]]
    report["answers"] = keep
    for row in report["classifier"].values():
        row["per_class"][LABELS[1]] = {"n": 0, "accuracy": 0.0}
        row["confusion_matrix"][1] = [0] * len(LABELS)
    assert figures.departments(report, LABELS) == DEPARTMENTS  # Kiwi takes its neighbour's
    for path in figures.write_evaluation_figures(report, tmp_path):
        assert_png(path)


def test_the_training_curves_are_drawn_from_the_runs_histories(tmp_path: Path):
    held_back = write_history(tmp_path / "held_back", summary={"best_epoch": 3, "best_selection_top1": 0.75, "best_weights": "trained"})
    final_fit = write_history(tmp_path / "final_fit", epochs=3, selection=False, summary={"final_fit_of": str(held_back)})
    out = tmp_path / "curves.png"
    assert figures.main(["training", str(held_back), str(final_fit / "history.csv"), "--out", str(out)]) == [out]
    assert_png(out)
    name, epochs, summary = figures.read_history(final_fit)
    assert name == "final_fit" and len(epochs) == 3 and np.isnan(epochs[0]["selection_top1"]) and "final_fit_of" in summary


def test_the_latency_chart_is_drawn_from_the_benchmark_json(tmp_path: Path):
    (tmp_path / "benchmark.json").write_text(json.dumps(benchmark_results()))
    out = tmp_path / "latency.png"
    assert benchmark_chart.main([str(tmp_path), "--out", str(out), "--title", "a test run"]) == out
    assert_png(out)
    titles = [title for title, _ in benchmark_chart.chart_rows(benchmark_results())]
    assert titles[0] == "served (HTTP), auto" and "served, max_batch_size 8" in titles
    assert "served, requests gathered into one model call" in titles  # its wait unrecorded: none made up
    assert not any(title.startswith("raw") for title in titles)  # no latency in process


@pytest.mark.parametrize("command", [
    ["pipeline.evaluation.figures", "evaluation", "{missing}", "--out", "{out}"],
    ["pipeline.evaluation.figures", "training", "{missing}", "--out", "{out}/x.png"],
    ["load_tests.benchmark_chart", "{missing}", "--out", "{out}/x.png"],
])
def test_a_missing_input_stops_the_command_naming_the_file(tmp_path: Path, capsys, command):
    module = {"pipeline.evaluation.figures": figures, "load_tests.benchmark_chart": benchmark_chart}[command[0]]
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as stopped:
        module.main([word.format(missing=missing, out=tmp_path / "out") for word in command[1:]])
    assert stopped.value.code == 2
    assert f"{missing}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_foreign_input_stops_the_command_saying_what_it_lacks(tmp_path: Path, capsys):
    (tmp_path / "evaluation.json").write_text(json.dumps({"classifier": {}}))
    (tmp_path / "history.csv").write_text("epoch,loss\n1,2\n")
    (tmp_path / "benchmark.json").write_text(json.dumps({"photos": 12}))
    for module, argv in ((figures, ["evaluation", str(tmp_path)]), (figures, ["training", str(tmp_path)]),
                         (benchmark_chart, [str(tmp_path)])):
        with pytest.raises(SystemExit):
            module.main([*argv, "--out", str(tmp_path / "out.png")])
        assert str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_every_picture_in_docs_figures_is_small_and_shown_by_a_doc_naming_its_command():
    docs = {path: path.read_text(encoding="utf-8") for path in [*REPO_ROOT.glob("*.md"), *(REPO_ROOT / "docs").glob("*.md")]}
    pictures = sorted(FIGURES.glob("*.png"))
    assert {path.name for path in pictures} >= {"confusion_matrix.png", "per_class_accuracy.png", "training_curves.png",
                                                "benchmark_latency.png"}
    for picture in pictures:
        assert_png(picture)
        showing = [doc for doc, text in docs.items() if re.search(rf"\]\([^)]*figures/{re.escape(picture.name)}\)", text)]
        assert showing, f"no doc shows {picture.name}"
        commands = r"python -m (pipeline\.evaluation\.figures|load_tests\.benchmark_chart)[^`]*docs/figures"
        assert any(re.search(commands, docs[doc]) for doc in showing), f"{picture.name}: its doc names no command drawing it"


def test_the_operator_page_picture_is_small_and_shown_by_a_doc_naming_its_command():
    """docs/ui.png is drawn on the real graph in a browser (load_tests/operator_page.py, as tests/test_catalog_ui.py
    drives it), from photos made from the quick start's CC0 photo: never a test's screenshot, whose photos are the
    data sets'."""
    docs = {path: path.read_text(encoding="utf-8") for path in [*REPO_ROOT.glob("*.md"), *(REPO_ROOT / "docs").glob("*.md")]}
    assert_png(REPO_ROOT / "docs" / "ui.png")
    showing = [doc for doc, text in docs.items() if re.search(r"\]\((docs/)?ui\.png\)", text)]
    assert showing, "no doc shows docs/ui.png"
    assert any(re.search(r"python -m load_tests\.ui_screenshot[^`]*docs/ui\.png", docs[doc]) for doc in showing)
