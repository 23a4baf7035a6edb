"""What happened to one request: its record and the kind of outcome (no gevent here, so tests can import it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

BACKPRESSURE = "backpressure_503"
ANSWER_KEY = {"/hello": b'"item"', "/v1/recognize": b'"products"'}
OK = "ok"
IN_FLIGHT = "in_flight"  # sent, never finished (still open when the run stopped)
CLIENT_STOPPED = "client_stopped"  # the load generator stopped the user mid-request: not the service's doing


@dataclass
class RequestRecord:
    start: float  # wall-clock time the request was sent
    latency_s: float
    endpoint: str
    status: int  # 0: no HTTP answer
    kind: str  # ok | backpressure_503 | error_503 | http_<status> | bad_answer | timeout | connection | in_flight
    #           | client_stopped

    def to_dict(self) -> dict:
        return asdict(self)


def classify(status: int, body: bytes, error: BaseException | None) -> str:
    """What kind of outcome a request had; only `ok` and `backpressure_503` are expected under peak load.

    Back-pressure is a 503 from the proxy (its queue is full: "backpressure" in the text) or from the
    Recognizer (a model deployment's queue is full: JSON error code "overloaded").
    """
    if status == 0:
        text = f"{type(error).__name__}: {error}".lower() if error else ""
        return "timeout" if "timeout" in text or "timed out" in text else "connection"
    if 200 <= status < 300:
        return OK
    if status == 503:
        if b"backpressure" in body.lower().replace(b"-", b"").replace(b" ", b""):
            return BACKPRESSURE
        try:
            code = json.loads(body)["error"]["code"]
        except Exception:
            code = None
        return BACKPRESSURE if code == "overloaded" else "error_503"
    return f"http_{status}"


def retry_after_s(header: str | None, default_s: float = 1.0, most_s: float = 30.0) -> float:
    """Seconds a Retry-After header asks for (the delay-seconds form; an HTTP date or junk gives the default)."""
    try:
        return min(most_s, max(0.0, float(header))) if header else default_s
    except ValueError:
        return default_s
