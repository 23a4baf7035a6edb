"""deployments/calls.py, the one way a deployment calls another, with stand-in handle methods: which failures are
retried (a lost replica, once), which are the callee being unavailable (mapped to the caller's error) and which
are bugs (unchanged). Through the ingress: tests/test_recognizer.py (model calls), tests/test_catalog_routes.py
(the Catalog's)."""

from __future__ import annotations

import asyncio
import time

import pytest
from grpc import StatusCode
from grpc.aio import AioRpcError, Metadata
from ray.exceptions import RayActorError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from deployments.calls import as_raised, call

pytestmark = pytest.mark.timeout(30)


def grpc_error(code: StatusCode) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), "stand-in")


LOST = [RayActorError(), ReplicaUnavailableError("r1"), grpc_error(StatusCode.UNAVAILABLE), grpc_error(StatusCode.CANCELLED)]
NOT_ANSWERING = [BackPressureError(num_queued_requests=8, max_queued_requests=8),
                 DeploymentUnavailableError(DeploymentID(name="Detector", app_name="recognizer"))]


class Method:
    """A handle's method: each `.remote()` raises the next of `errors`, then answers `args` back after `delay_s`."""

    def __init__(self, *errors: Exception, delay_s: float = 0.0) -> None:
        self.errors, self.delay_s, self.calls = list(errors), delay_s, 0

    def remote(self, *args):
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None

        async def answer():
            if error is not None:
                raise error
            await asyncio.sleep(self.delay_s)
            return args

        return answer()


class Unavailable(Exception):
    """The caller's own error for an unavailable callee; keeps what made it so."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def run(method: Method, timeout_s: float = 5.0, **options):
    return asyncio.run(call("Stand.in", method, "x", timeout_s=timeout_s, failed=Unavailable, **options))


@pytest.mark.parametrize("lost", LOST, ids=lambda error: type(error).__name__)
def test_a_replica_lost_once_is_retried_and_answered(lost):
    method = Method(lost)
    assert run(method) == ("x",) and method.calls == 2


@pytest.mark.parametrize("lost", LOST[:2], ids=lambda error: type(error).__name__)
def test_a_replica_lost_twice_is_the_callers_error(lost):
    method = Method(lost, lost)
    with pytest.raises(Unavailable) as raised:
        run(method)
    assert raised.value.cause is lost and method.calls == 2


@pytest.mark.parametrize("lost", LOST[:2], ids=lambda error: type(error).__name__)
def test_a_call_that_may_not_run_twice_is_not_retried(lost):
    method = Method(lost)
    with pytest.raises(Unavailable):
        run(method, retry_lost=False)
    assert method.calls == 1


@pytest.mark.parametrize("error", NOT_ANSWERING, ids=lambda error: type(error).__name__)
def test_an_overloaded_or_absent_callee_is_the_callers_error_at_once(error):
    method = Method(error)
    with pytest.raises(Unavailable) as raised:
        run(method)
    assert raised.value.cause is error and method.calls == 1


def test_a_callee_past_the_timeout_is_the_callers_error_at_the_bound():
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        run(Method(delay_s=5.0), timeout_s=0.2)
    assert isinstance(raised.value.cause, TimeoutError) and time.monotonic() - started < 2.0


@pytest.mark.parametrize("bug", [ValueError("a bad crop shape"), grpc_error(StatusCode.INVALID_ARGUMENT)],
                         ids=["ValueError", "grpc-invalid-argument"])
def test_the_callees_own_failure_is_a_bug_and_propagates_unchanged(bug):
    method = Method(bug)
    with pytest.raises(type(bug)) as raised:
        run(method)
    assert raised.value is bug and method.calls == 1


def test_a_caller_without_an_error_of_its_own_gets_rays():
    error = NOT_ANSWERING[1]
    with pytest.raises(DeploymentUnavailableError) as raised:
        asyncio.run(call("Stand.in", Method(error), timeout_s=5.0, failed=as_raised))
    assert raised.value is error
