"""What a load measurement reads: a closed-loop HTTP client, the CPU a run's processes used, and Serve's own batch
metrics. Shared by the benchmark's rows (load_tests.benchmark) and their tests."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np


def drive(url: str, bodies: list[tuple[bytes, dict]], concurrency: int, duration_s: float, warmup_s: float,
          endpoint: str = "/hello", timeout_s: float = 120) -> dict:
    """Closed-loop client: `concurrency` threads each send the next photo when the last is answered.

    Counts the 200s answered inside the measured window (after the warm-up); latencies of requests sent in it.
    """
    start = time.time()
    window = (start + warmup_s, start + warmup_s + duration_s)
    records: list[tuple[float, float, int, bytes]] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        index = offset
        with httpx.Client(timeout=timeout_s) as client:
            while time.time() < window[1]:
                body, headers = bodies[index % len(bodies)]
                index += concurrency
                sent = time.time()
                try:
                    response = client.post(url + endpoint, content=body, headers=headers)
                    status, content = response.status_code, response.content
                except httpx.HTTPError:
                    status, content = 0, b""
                with lock:
                    records.append((sent, time.time(), status, content))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [r for r in records if window[0] <= r[1] <= window[1] and r[2] == 200]
    latencies = [done - sent for sent, done, status, _ in records if status == 200 and window[0] <= sent and done <= window[1] + timeout_s]
    statuses: dict[str, int] = {}
    for _, _, status, _ in records:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "images_per_s": len(answered) / duration_s,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "statuses": statuses,
        "bodies": [r[3] for r in answered],
    }


HARNESS = ("load_tests.control",)
"""Processes of the benchmark's own harness besides this one (the load client): the control process, Ray's
driver here and the sampler of the served graph. With the client they are `harness_cores`, not the service's:
in production the load comes from elsewhere and `serve run`'s own driver sits idle."""


class CpuShare:
    """CPU seconds used, during a measurement, by this benchmark's process tree (client, servers, Ray and its
    replicas) and by everything else on the machine: on a shared machine the figures only compare when the
    others' share was similar. `service_cores` are the tree's less the harness's (the client in this process,
    the control process): what serving the photos cost."""

    def __enter__(self) -> CpuShare:
        import psutil

        self._psutil = psutil
        self._start = (time.monotonic(), self._busy(), self._ours())
        return self

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    def _ours(self) -> tuple[float, dict[int, tuple[str, float]]]:
        import resource

        finished = resource.getrusage(resource.RUSAGE_CHILDREN)  # children already waited for (the raw worker)
        total, by_pid = finished.ru_utime + finished.ru_stime, {}
        root = self._psutil.Process()
        for process in [root] + root.children(recursive=True):
            try:
                times = process.cpu_times()
                command = process.cmdline() or [process.name()]
                # Ray names its workers by role (ray::ServeReplica:recognizer:Detector, ray::ProxyActor, ...)
                title = command[0].split(" ")[0]
                title = title.split(".")[0] if title.startswith("ray::") else title.rsplit("/", 1)[-1]  # raylet, python, ...
                if process.pid == root.pid:
                    title = "this process (load client)"
                elif any(module in command for module in HARNESS):
                    title = next(module for module in HARNESS if module in command) + " (harness)"
                by_pid[process.pid] = (title[:60], times.user + times.system)
                total += times.user + times.system
            except self._psutil.Error:
                pass
        return total, by_pid

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self._start[0]
        ours_end, by_pid = self._ours()
        busy, ours = self._busy() - self._start[1], ours_end - self._start[2][0]
        groups: dict[str, float] = {}
        for pid, (title, seconds) in by_pid.items():
            groups[title] = groups.get(title, 0.0) + seconds - self._start[2][1].get(pid, (title, 0.0))[1]
        top = sorted(((round(v / wall, 2), k) for k, v in groups.items() if v / wall >= 0.02), reverse=True)
        harness = sum(max(0.0, v) for k, v in groups.items() if k.endswith("(load client)") or k.endswith("(harness)"))
        self.result = {"ours_cores": round(ours / wall, 2), "others_cores": round(max(0.0, busy - ours) / wall, 2),
                       "service_cores": round((ours - harness) / wall, 2), "harness_cores": round(harness / wall, 2),
                       "ours_cpu_s": round(ours, 1), "cores_by_process": {k: v for v, k in top}}


def stage_means(answers: list[bytes]) -> dict[str, float]:
    """Mean per-stage milliseconds from /v1/recognize answers (queueing included): where the time goes."""
    timings = [json.loads(a)["timings"] for a in answers]
    return {key: round(float(np.mean([t[key] for t in timings])), 1) for key in timings[0]} if timings else {}


def batch_metrics(urls: list[str]) -> dict[tuple[str, str], dict]:
    """Serve's own @serve.batch metrics per (deployment, replica), from each node's Prometheus endpoint:
    the batch-size histogram's cumulative buckets {le: count} (exact: load_tests.control gives it one bucket
    per size up to 64), and sum/count of the wait-to-fill and run times (sums are approximate)."""
    series: dict[tuple[str, str], dict] = {}
    for url in urls:
        try:
            text = httpx.get(url, timeout=10).text
        except httpx.HTTPError:
            continue
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if not name.startswith("ray_serve_") or 'deployment="' not in line:
                continue
            label = lambda key, line=line: line.split(f'{key}="', 1)[1].split('"', 1)[0] if f'{key}="' in line else ""  # noqa: E731
            entry = series.setdefault((label("deployment"), label("replica")), {"sizes": {}})
            value = float(line.rsplit(" ", 1)[1])
            if name == "ray_serve_actual_batch_size_bucket" and label("le") != "+Inf":
                entry["sizes"][float(label("le"))] = value
            elif name in ("ray_serve_batch_wait_time_ms_sum", "ray_serve_batch_wait_time_ms_count",
                          "ray_serve_batch_execution_time_ms_sum", "ray_serve_batch_execution_time_ms_count"):
                entry[name[len("ray_serve_"):]] = value
    return series


def batch_summary(before: dict, after: dict) -> dict[str, dict]:
    """Batches formed between two scrapes, per deployment: how many, mean size, size histogram, mean wait for
    a batch to fill and mean run time (replicas gone in between are left out; new ones count from zero)."""
    sizes: dict[str, dict[float, float]] = {}
    times: dict[str, dict[str, float]] = {}
    for key, values in after.items():
        deployment, earlier = key[0], before.get(key, {"sizes": {}})
        cumulative = sorted((le, n - earlier["sizes"].get(le, 0.0)) for le, n in values["sizes"].items())
        previous = 0.0
        for le, n in cumulative:
            sizes.setdefault(deployment, {})[le] = sizes.get(deployment, {}).get(le, 0.0) + max(0.0, n - previous)
            previous = n
        for name, value in values.items():
            if name != "sizes":
                times.setdefault(deployment, {})[name] = times.get(deployment, {}).get(name, 0.0) + max(0.0, value - earlier.get(name, 0.0))
    out = {}
    for deployment, histogram in sizes.items():
        batches = sum(histogram.values())
        if batches:
            t = times.get(deployment, {})
            out[deployment] = {
                "batches": int(batches),
                "mean_batch": round(sum(le * n for le, n in histogram.items()) / batches, 2),
                "sizes": {int(le): int(n) for le, n in histogram.items() if n},
                "mean_wait_ms": round(t.get("batch_wait_time_ms_sum", 0) / max(1, t.get("batch_wait_time_ms_count", 0)), 1),
                "mean_run_ms": round(t.get("batch_execution_time_ms_sum", 0) / max(1, t.get("batch_execution_time_ms_count", 0)), 1),
            }
    return out


def wait_http(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")

