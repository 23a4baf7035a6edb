"""An ingress replica's copy of the catalog's vectors, kept current by long-polling the Catalog deployment.

Matching runs where the embeddings arrive (the ingress), against this in-memory copy, so recognition never
waits on the Catalog and keeps answering from the copy while the Catalog is down. The follower asks
`Catalog.changes(version)`, which answers as soon as a write lands: an enrolled product is matched by every
replica within the time of one snapshot transfer. A snapshot of another classifier version is never used: a
catalog never mixes two models' embeddings.
"""

from __future__ import annotations

import asyncio
import logging

import faiss
from ray.serve.handle import DeploymentHandle

from pipeline.core.catalog.match import CatalogIndex, CatalogSnapshot

logger = logging.getLogger("ray.serve")

POLL_TIMEOUT_S = 10.0
"""How long one long-poll waits on the Catalog before asking again."""

RETRY_S = (0.2, 0.5, 1.0, 2.0)
"""Waits between attempts while the Catalog is unreachable (the last one repeats)."""

FIRST_SNAPSHOT_WAIT_S = 1.0
"""How long a request waits for this replica's first snapshot before answering without the catalog."""


class CatalogCopy:
    """The vectors of the catalog version this replica matches against, and the task that follows it."""

    def __init__(self, catalog: DeploymentHandle | None, model_version: str) -> None:
        faiss.omp_set_num_threads(1)  # one crop's search is a millisecond or two: no threads to fight the replica's
        self.catalog = catalog
        self.model_version = model_version
        self.index: CatalogIndex | None = None  # None until the first snapshot of this model arrives
        self.version: int | None = None
        self.arrived = asyncio.Event()
        self.task: asyncio.Task | None = None

    def follow(self) -> None:
        """Start following (idempotent): from a coroutine of the replica's event loop."""
        if self.catalog is not None and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._follow())

    async def current(self) -> CatalogIndex | None:
        """The index to match with: after the first snapshot, at once; before it, after at most
        FIRST_SNAPSHOT_WAIT_S (then None: this answer goes without the catalog)."""
        if self.catalog is None:
            return None
        self.follow()
        if self.index is None:
            try:
                await asyncio.wait_for(self.arrived.wait(), FIRST_SNAPSHOT_WAIT_S)
            except TimeoutError:
                pass
        return self.index

    def use(self, snapshot: CatalogSnapshot) -> None:
        self.version = snapshot.version  # followed either way: the next long-poll waits for the next change
        if snapshot.model_version != self.model_version:
            logger.warning("catalog version %d holds embeddings of %s, not %s: not used", snapshot.version,
                           snapshot.model_version, self.model_version)
            return
        self.index = CatalogIndex(snapshot)
        self.arrived.set()

    async def _follow(self) -> None:
        assert self.catalog is not None
        failures = 0
        while True:
            try:
                snapshot = await self.catalog.changes.remote(-1 if self.version is None else self.version, POLL_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the Catalog down or restarting: keep the copy, ask again later
                if failures == 0:
                    logger.warning("catalog unreachable (%s): matching with version %s until it is back",
                                   type(error).__name__, self.version)
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            if failures:
                logger.info("catalog reachable again")
            failures = 0
            if snapshot is not None:
                self.use(snapshot)
