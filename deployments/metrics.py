"""The product's own metrics, next to the ones Ray Serve exports (requests, latency, replicas, batch sizes).

Defined with `ray.serve.metrics`, so Serve adds the deployment, replica and application tags and Ray's metrics
agent exports them for Prometheus (names get Ray's `ray_` prefix; counters a `_total` suffix). docs/operating.md, "Metrics".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

from ray.serve.metrics import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from deployments.schemas import Recognition

STAGES = ("read", "decode", "detect", "crop", "classify", "total")
"""The stages of Recognition.timings, each observed as `stage` of product_stage_seconds when it ran."""

# Seconds. BENCHMARKS.md: a crop's classification is a few ms, a photo's decode and detection tens of ms, a
# /hello's p50 0.13-0.54 s and its p99 up to 0.95 s under load; 2 s is the p99 alert's threshold
# (deploy/monitoring/alert-rules.yaml), 30 s the model call timeout's order.
STAGE_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5,
                      2.0, 3.0, 5.0, 10.0, 30.0]
PRODUCTS_BOUNDARIES = [0.5, 1.5, 2.5, 3.5, 5.5, 8.5, 10.5]  # 1, 2, 3, 4-5, 6-8, 9-10 products a photo

Outcome = Callable[[Exception], tuple[int, str, bool]]
"""An exception → (HTTP status, error code, whether it is a decode refusal)."""


class RecognizerMetrics:
    """What the ingress counts about the photos it answers."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.photos = Counter(
            "product_photos", description="Photos answered, by endpoint and outcome (HTTP status and error code; 'ok' for 200)",
            tag_keys=("endpoint", "status", "code"),  # type: ignore[arg-type]  # Ray annotates tag_keys as a 1-tuple
        )
        self.in_flight = Gauge("product_photos_in_flight", description="Photos this replica is working on now", tag_keys=("endpoint",))
        self.products = Histogram(
            "product_products_per_photo", description="Products named in one answered photo (1 for a whole-photo answer)",
            boundaries=PRODUCTS_BOUNDARIES, tag_keys=("endpoint",),
        )
        self.unknown = Counter(
            "product_unknown_products", description="Products answered as unknown (under the unknown threshold)", tag_keys=("endpoint",),
        )
        self.whole_photo = Counter(
            "product_whole_photo_answers",
            description="Photos answered from the whole photo alone: nothing was detected, or /hello under the whole-photo "
                        "policy with no product enrolled (the detector is not asked)",
            tag_keys=("endpoint",),
        )
        self.stage_seconds = Histogram(
            "product_stage_seconds", description="Seconds per stage of an answered photo, queueing included; a stage "
                                                 "that did not run (a whole-photo /hello's detect) is not observed",
            boundaries=STAGE_BOUNDARIES_S, tag_keys=("endpoint", "stage"),  # type: ignore[arg-type]
        )
        self.decode_refusals = Counter(
            "product_decode_refusals", description="Uploads refused while decoding, by error code", tag_keys=("code",),
        )
        self._in_flight: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def photo(self, endpoint: str) -> AsyncIterator[Callable[[Recognition, Mapping[str, float]], Recognition]]:
        """Counts one request to `endpoint`: its outcome, and for an answer what `record(answer, stage_seconds)` is
        given (`stage_seconds`: the seconds of each stage that ran, by name from STAGES)."""
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        self.in_flight.set(self._in_flight[endpoint], tags={"endpoint": endpoint})
        try:
            yield lambda recognition, stage_seconds: self._answered(endpoint, recognition, stage_seconds)
        except Exception as error:
            status, code, decode_refusal = self.outcome(error)
            self.photos.inc(tags={"endpoint": endpoint, "status": str(status), "code": code})
            if decode_refusal:
                self.decode_refusals.inc(tags={"code": code})
            raise
        else:
            self.photos.inc(tags={"endpoint": endpoint, "status": "200", "code": "ok"})
        finally:
            self._in_flight[endpoint] -= 1
            self.in_flight.set(self._in_flight[endpoint], tags={"endpoint": endpoint})

    def refresh(self) -> None:
        """Sets the in-flight gauges again. Ray drops a gauge that was not set within two metrics export intervals
        (20 s by default), so an idle replica's would vanish instead of reading 0; Serve's health check calls this
        (every 10 s)."""
        for endpoint, count in self._in_flight.items():
            self.in_flight.set(count, tags={"endpoint": endpoint})

    def _answered(self, endpoint: str, recognition: Recognition, stage_seconds: Mapping[str, float]) -> Recognition:
        tags = {"endpoint": endpoint}
        self.products.observe(len(recognition.products), tags=tags)
        unknown = sum(not product.known for product in recognition.products)
        if unknown:
            self.unknown.inc(unknown, tags=tags)
        if recognition.whole_photo:
            self.whole_photo.inc(tags=tags)
        for stage, seconds in stage_seconds.items():
            self.stage_seconds.observe(seconds, tags={"endpoint": endpoint, "stage": stage})
        return recognition
