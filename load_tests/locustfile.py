"""Locust user and load shape for the recognition service, with the real request shapes.

- `/hello`: the original business server's call, byte for byte as Spring's RestTemplate builds it (one
  multipart part `img`, a Content-Length per part, `charset=UTF-8` in the content type).
- `/v1/recognize`: our API, a multipart part `image`.
Every request's outcome is kept as a `RequestRecord` (not only locust's aggregates), so the checks and the
chart work from raw data. Also usable with the locust CLI: `locust -f load_tests/locustfile.py --host URL`.
"""

from __future__ import annotations

import random
import time

from gevent import GreenletExit
from locust import FastHttpUser, LoadTestShape, task

from load_tests.bodies import multipart_body, rest_template_body
from load_tests.outcomes import (
    ANSWER_KEY,
    BACKPRESSURE,
    CLIENT_STOPPED,
    IN_FLIGHT,
    OK,
    RequestRecord,
    classify,
    read_answer,
)


class Requests:
    """Bodies built once per photo (building a 3 MB body per request would load the client, not the service)."""

    hello: list[tuple[bytes, dict]] = []
    recognize: list[tuple[bytes, dict]] = []
    records: list[RequestRecord] = []

    @classmethod
    def prepare(cls, photos: list[tuple[str, bytes]]) -> None:
        cls.hello = [rest_template_body(data, name) for name, data in photos]
        cls.recognize = [multipart_body(data, "image", name) for name, data in photos]
        cls.records = []


class RecognitionUser(FastHttpUser):
    """A business server relaying shoppers' photos: sends the next one as soon as the last is answered.

    Closed loop, so `users` is the number of requests in flight: a peak of N users is N concurrent shoppers.
    After a 503 or a 408, JSON from the app or text/plain from Ray Serve's proxy (outcomes.read_answer), it
    waits as the answer's Retry-After says (1 s without one), as a well-behaved client does; re-sending at once
    would turn every shed request into a retry storm that keeps the service shedding.
    """

    network_timeout = 30.0  # no answer in this long counts as a hang ("timeout")
    connection_timeout = 10.0
    backoff_s = 0.0  # set by a 503, spent by the next wait

    def wait_time(self) -> float:
        backoff, self.backoff_s = self.backoff_s, 0.0
        return backoff

    def on_start(self) -> None:
        if not Requests.hello:  # started by the locust CLI: make the photos here, once
            from load_tests.photos import load_photos

            Requests.prepare(load_photos())

    def _send(self, endpoint: str, body: bytes, headers: dict) -> None:
        # Recorded before it is sent, so a request that never finishes stays visible as "in_flight".
        record = RequestRecord(time.time(), 0.0, endpoint, 0, IN_FLIGHT)
        Requests.records.append(record)
        began = time.perf_counter()
        try:
            self._post(record, endpoint, body, headers, began)
        except GreenletExit:
            # locust killed this user mid-request (a user told to stop while it waited can still start one
            # before the kill lands): the client walked away, the service lost nothing.
            record.latency_s, record.kind = time.perf_counter() - began, CLIENT_STOPPED
            raise

    def _post(self, record: RequestRecord, endpoint: str, body: bytes, headers: dict, began: float) -> None:
        with self.client.post(endpoint, data=body, headers=headers, catch_response=True) as response:
            record.latency_s = time.perf_counter() - began
            record.status = status = response.status_code or 0
            body = (response.content or b"") if status else b""
            headers = response.headers if status else None
            error = getattr(response, "error", None) or response.request_meta.get("exception")
            kind = classify(status, body, error, headers)
            if kind == OK and ANSWER_KEY[endpoint] not in body:
                kind = "bad_answer"  # a 200 without the answer's shape is an error too
            record.kind = kind
            if status >= 400:
                answer = read_answer(status, body, headers)
                record.code = answer.code
                if answer.retry_after_s is not None:  # 503/408/429, JSON or the proxy's text/plain
                    self.backoff_s = answer.retry_after_s
            if kind in (OK, BACKPRESSURE):
                response.success()  # back-pressure is the service working as designed; it is counted, not failed
            else:
                response.failure(kind)

    @task
    def hello(self) -> None:
        self._send("/hello", *random.choice(Requests.hello))

    @task
    def recognize(self) -> None:
        self._send("/v1/recognize", *random.choice(Requests.recognize))


class PeakShape(LoadTestShape):
    """Quiet baseline → a step to the peak → hold → back to quiet, as lunch-time traffic does.

    `stages` is a list of (until_s, users); the test ends after the last stage. Each change is one step:
    locust ramps down in steps of `spawn_rate` users and waits for each step's users to finish their
    request before the next, so at a lower rate a drop from 200 users to 2 would take many admitted-request
    latencies while the users not yet stopped go on sending.
    """

    def __init__(self, stages: list[tuple[float, int]] | None = None, spawn_rate: float = 10_000) -> None:
        super().__init__()
        self.stages = stages or peak_stages(10, 30, 45, 1, 24)
        self.spawn_rate = spawn_rate

    def tick(self):
        run_time = self.get_run_time()
        for until, users in self.stages:
            if run_time < until:
                return users, self.spawn_rate
        return None


def peak_stages(baseline_s: float, peak_s: float, quiet_s: float, quiet_users: int, peak_users: int) -> list[tuple[float, int]]:
    return [(baseline_s, quiet_users), (baseline_s + peak_s, peak_users), (baseline_s + peak_s + quiet_s, quiet_users)]
