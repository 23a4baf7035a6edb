"""Issue 9, item 5: a client tells the app's JSON answers from the ones Ray Serve's proxy gives itself.

The proxy's answers are built here by the installed Ray's and uvicorn's own code (the functions the proxy calls
when a request fails before or outside the app), the app's by the ingress's own error builder, so the test
follows both when either changes. No cluster: this is the client's side (load_tests/outcomes.py, used by the
locust user). tests/test_make_serve.py gets the same answers from a running app.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from ray.exceptions import RayActorError
from ray.serve._private.common import DeploymentID
from ray.serve._private.http_util import get_http_response_status, send_http_response_on_exception
from ray.serve._private.proxy import HTTPProxy
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from uvicorn.protocols.http.h11_impl import RequestResponseCycle

from deployments.errors import error_response
from load_tests.outcomes import APP, BACKPRESSURE, PROXY, PROXY_TIMEOUT, classify, read_answer


def from_asgi(messages: list[dict]) -> tuple[int, dict[str, str], bytes]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def proxy_answer_to(error: BaseException, request_timeout_s: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """What the proxy sends when the ingress call raises `error` (proxy.py, send_request_to_replica)."""
    status = get_http_response_status(error, request_timeout_s, "0d1e2f")
    messages = send_http_response_on_exception(status, response_started=False)
    if not messages:  # a 500: the proxy sends nothing, so uvicorn answers for the app that returned silently
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(RequestResponseCycle.send_500_response(SimpleNamespace(send=send)))
        messages = sent
    return from_asgi(messages)


def proxy_not_found(path: str) -> tuple[int, dict[str, str], bytes]:
    async def collect():
        return [m async for m in HTTPProxy.not_found_response(None, SimpleNamespace(path=path)) if isinstance(m, dict)]

    return from_asgi(asyncio.run(collect()))


def app_error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
    response = error_response(status, code, "a message")
    return response.status_code, dict(response.headers), bytes(response.body)


INGRESS = DeploymentID(name="Recognizer", app_name="recognizer")

# name: (the answer, source, code, retry, retry_after_s, the load test's outcome kind)
CASES = {
    "proxy 503, queue full (serve_config's backpressure_config)": (
        lambda: proxy_answer_to(BackPressureError(num_queued_requests=32, max_queued_requests=32, retry_after_s=1)),
        PROXY, "overloaded", True, 1.0, BACKPRESSURE),
    "proxy 503, queue full, no backpressure_config": (
        lambda: proxy_answer_to(BackPressureError(num_queued_requests=32, max_queued_requests=32)),
        PROXY, "overloaded", True, 1.0, BACKPRESSURE),
    "app 503 overloaded (a model deployment's queue is full)": (
        lambda: app_error(503, "overloaded"), APP, "overloaded", True, 1.0, BACKPRESSURE),
    "app 503 model_unavailable": (lambda: app_error(503, "model_unavailable"), APP, "model_unavailable", True, 1.0, "error_503"),
    "proxy 503, the ingress failed to deploy": (
        lambda: proxy_answer_to(DeploymentUnavailableError(INGRESS)), PROXY, "deployment_unavailable", True, 1.0, "error_503"),
    "proxy 408, request_timeout_s passed": (lambda: proxy_answer_to(TimeoutError()), PROXY, "proxy_timeout", True, 1.0, PROXY_TIMEOUT),
    "app 408, the body came too slowly": (lambda: app_error(408, "request_timeout"), APP, "request_timeout", True, 1.0, "http_408"),
    "proxy 500, the ingress replica died": (lambda: proxy_answer_to(RayActorError()), PROXY, "replica_failed", True, None, "http_500"),
    "proxy 404, no app deployed (yet)": (lambda: proxy_not_found("/v1/recognize"), PROXY, "no_route", True, None, "http_404"),
    "app 404": (lambda: app_error(404, "not_found"), APP, "not_found", False, None, "http_404"),
    "app 413": (lambda: app_error(413, "body_too_large"), APP, "body_too_large", False, None, "http_413"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_client_tells_the_proxys_answers_from_the_apps(case):
    make, source, code, retry, retry_after, kind = CASES[case]
    status, headers, body = make()
    answer = read_answer(status, body, headers)
    assert (answer.source, answer.code, answer.retry, answer.retry_after_s) == (source, code, retry, retry_after), (status, headers, body)
    assert answer.is_json == headers["content-type"].startswith("application/json")  # the proxy's are text/plain
    assert classify(status, body, None, headers) == kind


def test_the_proxys_overload_503_carries_retry_after_only_with_backpressure_config():
    _, with_config, body = proxy_answer_to(BackPressureError(num_queued_requests=32, max_queued_requests=32, retry_after_s=1))
    _, without, _ = proxy_answer_to(BackPressureError(num_queued_requests=32, max_queued_requests=32))
    assert with_config["retry-after"] == "1" and "retry-after" not in without
    assert with_config["content-type"].startswith("text/plain") and b"backpressure" in body


def test_the_shipped_config_gives_the_ingress_a_retry_after():

    from pipeline.core.settings import deployment_config, read_serve_config

    ingress = deployment_config(read_serve_config(), "Recognizer")
    assert ingress["backpressure_config"]["retry_after_s"] == 1
    assert ingress.get("backpressure_config", {}).get("status_code", 503) == 503  # the README promises 503s


def test_headers_are_read_case_insensitively_and_junk_retry_after_means_one_second():
    body = b"Request dropped due to backpressure (num_queued_requests=32, max_queued_requests=32)."
    answer = read_answer(503, body, {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "4"})
    assert (answer.source, answer.code, answer.retry_after_s) == (PROXY, "overloaded", 4.0)
    assert read_answer(503, body, {"content-type": "text/plain", "retry-after": "soon"}).retry_after_s == 1.0
    # No headers at all (a recorded body only): still told apart by the body.
    assert read_answer(503, b'{"error": {"code": "overloaded", "message": "m"}}').source == APP
    assert read_answer(503, body).code == "overloaded"
