"""How one deployment calls another: the one adapter every caller goes through (the Recognizer's calls to the
Detector and the Classifier, the Catalog's to the same two, the ingress's to the Catalog).

A call gets an answer within its timeout (its queueing included), or fails as unavailable: the callee is gone,
restarting, overloaded or too slow. That failure becomes the one error the caller names (a 503 with its code, or
Ray's own error, as the Catalog lets it reach the ingress). Any other exception is the callee's code failing on
these arguments, a bug: it propagates unchanged. A replica lost under a call is retried once when the caller says
its calls may run twice (model calls are pure; a catalog write is not).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from grpc import StatusCode
from grpc.aio import AioRpcError
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

logger = logging.getLogger("ray.serve")

MODEL_CALL_TIMEOUT_S = 30.0
"""The longest a photo waits for one model deployment (the Detector, the Classifier), queueing and a retry
included. Queues are bounded, so a healthy graph answers far sooner; past this the models are gone (a lost GPU
node, replicas still starting) and the ingress answers 503 `model_unavailable` with Retry-After, not the proxy's
408 after its 60 s request timeout. The Catalog's enrollment photos wait as long."""

REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
"""A replica died under the call (killed, crashed, its node lost)."""

GONE_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.CANCELLED})
"""How a call over Serve's gRPC transport (its throughput mode, serve_config.yaml) fails when the replica under it
is killed or unreachable."""

NOT_ANSWERING = (TimeoutError, BackPressureError, DeploymentUnavailableError)
"""The callee did not answer in time, is overloaded (its queue full), or has no replica at all."""


def replica_lost(error: BaseException) -> bool:
    """Whether the replica under the call was lost: the router sends a second try to a live replica, or holds it
    until Serve has started the replacement."""
    return isinstance(error, REPLICA_LOST) or (isinstance(error, AioRpcError) and error.code() in GONE_CODES)


def unavailable(error: BaseException) -> bool:
    """Whether a call failed because the callee was unavailable (never a bug in its code)."""
    return isinstance(error, NOT_ANSWERING) or replica_lost(error)


class Method(Protocol):
    """A DeploymentHandle's method (`handle.detect`): `.remote(*args)` gives an awaitable answer."""

    def remote(self, *args: Any) -> Any: ...


Failed = Callable[[BaseException], BaseException]
"""The error a caller raises for an unavailable call, from the one that made it so (TimeoutError for its timeout)."""


def as_raised(error: BaseException) -> BaseException:
    """No error of the caller's own: the unavailable call's error propagates as Ray raised it."""
    return error


async def call(name: str, method: Method, *args: Any, timeout_s: float, failed: Failed,
               retry_lost: bool = True) -> Any:
    """`method.remote(*args)`'s answer within `timeout_s`, or `failed(error)` raised when the callee was unavailable.

    `retry_lost`: a call whose replica was lost is sent once more (the timeout bounds both tries). `name`
    (Deployment.method) names the call in the log.
    """

    async def answer() -> Any:
        try:
            return await method.remote(*args)
        except Exception as error:
            if not (retry_lost and replica_lost(error)):
                raise
            logger.warning("model call %s lost its replica (%s); retrying once", name, type(error).__name__)
            return await method.remote(*args)

    try:
        return await asyncio.wait_for(answer(), timeout_s)  # on timeout the request is cancelled
    except Exception as error:
        if not unavailable(error):
            raise
        if isinstance(error, TimeoutError):
            logger.warning("call %s got no answer in %.0f s", name, timeout_s)
        else:
            logger.warning("call %s unavailable: %s %s", name, type(error).__name__,
                           error.code() if isinstance(error, AioRpcError) else "")
        raised = failed(error)
        if raised is error:
            raise
        raise raised from None
