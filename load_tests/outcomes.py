"""What happened to one request: its record and the kind of outcome (no gevent here, so tests can import it).

Two parties answer HTTP on port 8000, and a client must tell them apart:
- the app (the Recognizer ingress): every error is JSON, `{"error": {"code": ..., "message": ...}}`, with a
  stable code (README, "HTTP interface");
- Ray Serve's proxy in front of it, which answers some requests itself, text/plain, with no JSON code:
  503 "Request dropped due to backpressure (...)" when its queue for the ingress is full (with Retry-After,
  from the Recognizer's `backpressure_config` in serve_config.yaml), 503 "... is unavailable because it failed
  to deploy.", 408 "Request <id> timed out after 60.0s." (http_options.request_timeout_s), 500 "Internal
  Server Error" when the ingress replica dies under the request, 404 "Path '...' not found. Ping
  http://.../-/routes ..." while no app is deployed, and its HTTP server's 400 "Invalid HTTP request received.".
`read_answer` says who answered, the code (the app's, or one named here for the proxy's), and whether a client
should send the request again: every endpoint is idempotent, so whatever the service may answer differently
a moment later is worth a retry, after Retry-After when there is one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

BACKPRESSURE = "backpressure_503"
PROXY_TIMEOUT = "proxy_timeout_408"  # the proxy gave up waiting for the ingress: not the client's slow body (http_408)
ANSWER_KEY = {"/hello": b'"item"', "/v1/recognize": b'"products"'}
OK = "ok"
IN_FLIGHT = "in_flight"  # sent, never finished (still open when the run stopped)
CLIENT_STOPPED = "client_stopped"  # the load generator stopped the user mid-request: not the service's doing

APP, PROXY = "app", "proxy"
RETRYABLE_APP_CODES = {"overloaded", "model_unavailable", "request_timeout"}
"""The app's error codes a client may retry unchanged; every other 4xx wants a different request."""
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass
class RequestRecord:
    start: float  # wall-clock time the request was sent
    latency_s: float
    endpoint: str
    status: int  # 0: no HTTP answer
    kind: str  # ok | backpressure_503 | error_503 | proxy_timeout_408 | http_<status> | bad_answer | timeout
    #           | connection | in_flight | client_stopped
    code: str | None = None  # the error code: the app's JSON one, or the proxy's (read_answer)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """Who answered a request, and what a client should do about it."""

    status: int
    source: str  # APP: the ingress (JSON); PROXY: Ray Serve's proxy or its HTTP server (text/plain)
    code: str | None  # the app's error code, or for the proxy: overloaded | deployment_unavailable | unavailable
    #                   | proxy_timeout | replica_failed | no_route | bad_http; None for a success or an unknown text
    retry: bool  # worth sending again unchanged
    retry_after_s: float | None  # how long to wait first (Retry-After, else 1 s for 503/408/429); None: no wait

    @property
    def is_json(self) -> bool:
        return self.source == APP


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def _app_error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except Exception:
        return None
    return code if isinstance(code, str) else None


def _proxy_code(status: int, text: str) -> tuple[str | None, bool]:
    """The proxy's own text/plain answers (ray.serve._private.http_util, proxy.py; uvicorn for 400/500)."""
    squashed = text.lower().replace("-", "").replace(" ", "")
    if status == 503:
        if "backpressure" in squashed:
            return "overloaded", True
        if "failedtodeploy" in squashed:
            return "deployment_unavailable", True  # retry later: the deployment is being fixed or redeployed
        return "unavailable", True  # e.g. "This node is being drained."
    if status == 408 and "timedout" in squashed:
        return "proxy_timeout", True
    if status == 500:
        return "replica_failed", True  # the ingress replica died under the request (or an unexpected error)
    if status == 404 and "/-/routes" in text:
        return "no_route", True  # no app deployed yet (starting) or any more (`serve shutdown`)
    if status == 400:
        return "bad_http", False
    return None, False


def read_answer(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Answer:
    """Who answered (the app's JSON or the proxy's text/plain), with which code, and whether to retry."""
    content_type = (_header(headers, "content-type") or "").lower()
    code = _app_error_code(body) if status >= 400 and ("json" in content_type or not content_type) else None
    if 200 <= status < 300 or code is not None:
        source, retry = APP, code in RETRYABLE_APP_CODES
    elif "json" in content_type:  # JSON without our error shape: still the app's
        source, retry = APP, status in (408, 429, 503)
    else:
        source = PROXY
        code, retry = _proxy_code(status, body.decode("utf-8", "replace"))
    retry_after = None
    if retry:
        retry_after = retry_after_s(_header(headers, "retry-after")) if status in (408, 429, 503) else None
    return Answer(status, source, code, retry, retry_after)


def classify(status: int, body: bytes, error: BaseException | None, headers: Mapping[str, str] | None = None) -> str:
    """What kind of outcome a request had; only `ok` and `backpressure_503` are expected under peak load.

    Back-pressure is a 503 from the proxy (its queue for the ingress is full: text/plain, "backpressure") or
    from the Recognizer (a model deployment's queue is full: JSON error code "overloaded"). A 408 is the
    proxy's own request timeout (text/plain: `proxy_timeout_408`, the service was too slow) or the app's JSON
    `request_timeout` (`http_408`: the client sent its body too slowly).
    """
    if status == 0:
        text = f"{type(error).__name__}: {error}".lower() if error else ""
        return "timeout" if "timeout" in text or "timed out" in text else "connection"
    if 200 <= status < 300:
        return OK
    answer = read_answer(status, body, headers)
    if status == 503:
        return BACKPRESSURE if answer.code == "overloaded" else "error_503"
    if status == 408 and answer.source == PROXY:
        return PROXY_TIMEOUT
    return f"http_{status}"


def retry_after_s(header: str | None, default_s: float = DEFAULT_RETRY_AFTER_S, most_s: float = 30.0) -> float:
    """Seconds a Retry-After header asks for (the delay-seconds form; an HTTP date or junk gives the default)."""
    try:
        return min(most_s, max(0.0, float(header))) if header else default_s
    except ValueError:
        return default_s
