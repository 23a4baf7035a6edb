"""The product's own metrics, next to the ones Ray Serve exports (requests, latency, replicas, batch sizes).

Defined with `ray.serve.metrics`, so Serve adds the deployment, replica and application tags and Ray's metrics
agent exports them for Prometheus (names get Ray's `ray_` prefix; counters a `_total` suffix). docs/operating.md, "Metrics".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from ray.serve.metrics import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from deployments.schemas import Recognition

STAGES = ("read", "decode", "detect", "crop", "classify", "total")
"""The stages of Recognition.timings, each observed as `stage` of product_stage_latency_ms."""

LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0]
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
        self.stage_latency = Histogram(
            "product_stage_latency_ms", description="Milliseconds per stage of an answered photo, queueing included",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("stage",),
        )
        self.decode_refusals = Counter(
            "product_decode_refusals", description="Uploads refused while decoding, by error code", tag_keys=("code",),
        )
        self._in_flight: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def photo(self, endpoint: str) -> AsyncIterator[Callable[[Recognition], Recognition]]:
        """Counts one request to `endpoint`: its outcome, and for an answer what `record(answer)` is given."""
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        self.in_flight.set(self._in_flight[endpoint], tags={"endpoint": endpoint})
        try:
            yield lambda recognition: self._answered(endpoint, recognition)
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

    def _answered(self, endpoint: str, recognition: Recognition) -> Recognition:
        tags = {"endpoint": endpoint}
        self.products.observe(len(recognition.products), tags=tags)
        unknown = sum(not product.known for product in recognition.products)
        if unknown:
            self.unknown.inc(unknown, tags=tags)
        if recognition.whole_photo:
            self.whole_photo.inc(tags=tags)
        for stage in STAGES:
            self.stage_latency.observe(getattr(recognition.timings, f"{stage}_ms"), tags={"stage": stage})
        return recognition
