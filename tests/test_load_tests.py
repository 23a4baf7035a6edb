"""The load tooling itself: a short, bounded peak run against a tiny-model app writes its report, and every
check fails on a recorded run that violates it (synthetic records and samples)."""

import json
import subprocess
import sys

import pytest

from load_tests.bodies import rest_template_body
from load_tests.checks import (
    check_all_answered, check_only_backpressure, check_p99_bounded, check_recovered, check_rejections_fast,
    check_replaced, check_scaled_down, check_scaled_up, in_flight_at,
)
from pipeline.paths import REPO_ROOT as REPO
from tests.tiny_models import make_model_label

T0 = 1_000_000.0
DEPLOYMENTS = ["Recognizer", "Detector"]


def sample(t: float, recognizer: int, detector: int, starting: int = 0, actors: dict | None = None) -> dict:
    def states(running: int) -> dict:
        return {"RUNNING": running} | ({"STARTING": starting} if starting else {})

    return {"t": T0 + t, "app": "RUNNING", "deployments": {
        "Recognizer": {"status": "HEALTHY", "replicas": states(recognizer)},
        "Detector": {"status": "HEALTHY", "replicas": {"RUNNING": detector}},
    }, "actors": actors or {}}


def record(start: float, latency: float = 0.5, kind: str = "ok") -> dict:
    status = {"ok": 200, "backpressure_503": 503, "error_503": 503, "http_500": 500}.get(kind, 0)
    return {"start": T0 + start, "latency_s": latency, "endpoint": "/hello", "status": status, "kind": kind}


def test_scale_checks_pass_on_a_good_run_and_fail_on_bad_ones():
    good = [sample(t, 1, 1) for t in range(10)] + [sample(t, 1, 1, starting=1) for t in range(10, 13)]
    good += [sample(t, 2, 1) for t in range(13, 40)] + [sample(t, 1, 1) for t in range(40, 50)]
    assert check_scaled_up(good, DEPLOYMENTS, T0 + 8, T0 + 30, within_s=10).passed  # a STARTING replica counts
    assert check_scaled_down(good, DEPLOYMENTS, T0 + 8, T0 + 50).passed

    never = [sample(t, 1, 1) for t in range(50)]
    assert not check_scaled_up(never, DEPLOYMENTS, T0 + 8, T0 + 30, within_s=10).passed
    late = [sample(t, 1, 1) for t in range(25)] + [sample(t, 2, 1) for t in range(25, 50)]
    assert not check_scaled_up(late, DEPLOYMENTS, T0 + 8, T0 + 30, within_s=10).passed
    stuck = [sample(t, 1, 1) for t in range(10)] + [sample(t, 3, 2) for t in range(10, 50)]
    down = check_scaled_down(stuck, DEPLOYMENTS, T0 + 8, T0 + 50)
    assert not down.passed and "Recognizer 1→3→3" in down.detail


def test_request_checks_fail_on_hangs_drops_errors_and_slow_answers():
    fine = [record(t / 10) for t in range(100)] + [record(5, 0.05, "backpressure_503")]
    for check in (check_all_answered(fine), check_only_backpressure(fine), check_p99_bounded(fine, 2)):
        assert check.passed, check
    assert not check_all_answered(fine + [record(3, 30, "timeout")]).passed  # hung past the client timeout
    assert not check_all_answered(fine + [record(3, 1, "connection")]).passed  # vanished: connection dropped
    assert not check_all_answered(fine + [record(3, 0, "in_flight")]).passed  # sent, never finished
    assert not check_all_answered([]).passed
    stopped = fine + [record(3, 0.01, "client_stopped")]  # locust killed the user mid-request, not the service
    assert check_all_answered(stopped).passed and check_only_backpressure(stopped).passed
    assert not check_only_backpressure(fine + [record(3, 1, "error_503")]).passed
    assert not check_only_backpressure(fine + [record(3, 1, "http_500")]).passed
    assert not check_p99_bounded(fine + [record(3, 9.0)] * 5, 2).passed


def test_overload_and_fault_checks_fail_when_violated():
    fast = [record(t / 10, 0.1, "backpressure_503") for t in range(50)]
    assert check_rejections_fast(fast, 1).passed
    assert not check_rejections_fast([r | {"latency_s": 8.0} for r in fast], 1).passed  # 503 only after queueing
    assert not check_rejections_fast([record(1)], 1).passed  # no 503 at all: overload was not reached

    recovered = [record(t, 0.2) for t in range(20, 30)]
    assert check_recovered(recovered, T0 + 10, 10).passed
    assert not check_recovered(recovered + [record(25, 0.1, "backpressure_503")], T0 + 10, 10).passed
    assert not check_recovered([], T0 + 10, 10).passed

    killed = "SERVE_REPLICA::recognizer#Detector#a"
    replaced = [sample(t, 1, 1, actors={"Detector": [killed]}) for t in range(10)]
    replaced += [sample(t, 1, 0, actors={"Detector": []}) for t in range(10, 15)]
    replaced += [sample(t, 1, 1, actors={"Detector": ["SERVE_REPLICA::recognizer#Detector#b"]}) for t in range(15, 30)]
    assert check_replaced(replaced, "Detector", killed, T0 + 9.5, within_s=10).passed
    assert not check_replaced(replaced, "Detector", killed, T0 + 9.5, within_s=3).passed  # too slow
    same = [sample(t, 1, 1, actors={"Detector": [killed]}) for t in range(30)]  # the status still lists the dead actor
    assert not check_replaced(same, "Detector", killed, T0 + 9.5, within_s=10).passed

    flight = [record(9, 2, "ok"), record(9.5, 1, "error_503"), record(9.8, 40, "timeout"), record(11, 1, "ok")]
    assert in_flight_at(flight, T0 + 10) == {"error_503": 1, "ok": 1, "timeout": 1}


def test_classify_outcomes():
    from load_tests.outcomes import classify

    assert classify(200, b'{"item": "x"}', None) == "ok"
    assert classify(503, b"Request dropped due to backpressure (num_queued_requests=64, max_queued_requests=64).", None) == "backpressure_503"
    assert classify(503, b'{"error": {"code": "overloaded", "message": "..."}}', None) == "backpressure_503"
    assert classify(503, b'{"error": {"code": "model_unavailable", "message": "..."}}', None) == "error_503"
    assert classify(500, b"", None) == "http_500"
    assert classify(0, b"", TimeoutError("timed out")) == "timeout"
    assert classify(0, b"", ConnectionResetError("reset by peer")) == "connection"


def test_retry_after_is_honoured_as_seconds_with_a_default():
    from load_tests.outcomes import retry_after_s

    assert retry_after_s("2") == 2.0
    assert retry_after_s(None) == 1.0  # the proxy's own 503 carries none: back off a second anyway
    assert retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT") == 1.0
    assert retry_after_s("3600") == 30.0  # capped: a load test must not sleep through its phase


def test_hello_body_is_the_rest_template_shape():
    body, headers = rest_template_body(b"\xff\xd8jpeg", "사진.jpg")
    boundary = headers["Content-Type"].split("boundary=")[1]
    assert headers["Content-Type"].startswith("multipart/form-data;charset=UTF-8;boundary=")
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert 'name="img"; filename="사진.jpg"'.encode() in body and b"Content-Length: 6\r\n" in body


def test_benchmark_ratios_are_rendered():
    from load_tests.benchmark import render

    run = {"images_per_s": 4.0, "p50_s": 1.0, "p99_s": 2.0, "statuses": {"200": 40}}
    text = render({"photos": 12, "phones": 4, "concurrency": 16, "duration_s": 10, "served": run,
                   "baseline": run | {"images_per_s": 2.0}, "raw": {"8": {"images_per_s": 8.0, "ms_per_image": {}, "cpu": {"ours_cores": 2.0}}},
                   "served_default_mode": run | {"images_per_s": 3.2}, "sweep": {"1": run, "8": run}})
    assert "(1/2): 2.00" in text and "(1/3): 0.50" in text and "| 8 | 4.00 |" in text
    assert "default mode (HTTP) | 3.20 |" in text and "served in Ray Serve's default mode: 1.25" in text
    assert "| 2.0 / - | 4.00 |" in text  # raw: 8 images/s on 2 cores = 4 images per CPU-second


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_model_label(tmp_path_factory.mktemp("tiny"), ["사과_ _1", "우유_팩_200", "라면_컵_114"])


def test_short_peak_run_writes_its_report(tiny_model_dir, tmp_path):
    """A bounded run (about 20 s of load) against a freshly started tiny-model app, as CI can afford."""
    command = [sys.executable, "-m", "load_tests.peak", "--model-dir", str(tiny_model_dir), "--out", str(tmp_path),
               "--baseline-s", "3", "--peak-s", "10", "--quiet-s", "7", "--peak-users", "12",
               "--upscale-delay", "1", "--downscale-delay", "2", "--originals", "4", "--phones", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: some check failed, which a loaded machine may cause
    for name in ("peak.md", "peak.png", "peak.json", "samples.jsonl"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "peak.json").read_text())
    records, samples = report["records"], report["samples"]
    assert len(records) > 20
    assert {"Recognizer", "Detector", "Classifier"} <= set(samples[-1]["deployments"])
    assert len(samples) >= 15  # one a second over the run
    checks = {c["name"]: c for c in report["checks"]}
    assert len(checks) == 5 and checks["every request answered"]["passed"], checks
    markdown = (tmp_path / "peak.md").read_text()
    assert "## Checks" in markdown and "![chart](peak.png)" in markdown
    assert report["figures"]["max_replicas"]["Recognizer"] >= 1


def test_batch_sizes_formed_come_from_histogram_deltas():
    from load_tests.benchmark import batch_summary

    before = {("Detector", "a"): {"sizes": {1.0: 10, 2.0: 10, 3.0: 10}, "batch_wait_time_ms_sum": 100, "batch_wait_time_ms_count": 10},
              ("Detector", "gone"): {"sizes": {1.0: 50, 2.0: 50, 3.0: 50}}}
    after = {("Detector", "a"): {"sizes": {1.0: 12, 2.0: 14, 3.0: 15}, "batch_wait_time_ms_sum": 250, "batch_wait_time_ms_count": 15},
             ("Detector", "new"): {"sizes": {1.0: 0, 2.0: 0, 3.0: 1}}}
    summary = batch_summary(before, after)["Detector"]
    # replica a: 2 batches of 1, 2 of 2, 1 of 3; the new replica: 1 of 3; the replica that went away is left out
    assert summary["sizes"] == {1: 2, 2: 2, 3: 2} and summary["batches"] == 6
    assert summary["mean_batch"] == round((2 + 4 + 6) / 6, 2) and summary["mean_wait_ms"] == 30.0
