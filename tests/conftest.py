# The local Ray every test starts is the one `make serve` starts (Makefile): token auth on, node on 127.0.0.1.
# Set before anything imports Ray, which reads these names at import.
import sys

import pytest

from load_tests.local_ray import apply_local_ray_env
from pipeline.core.paths import SHARED_DATA

pytest_plugins = ["tests.catalog_store_fixtures"]  # the catalog store's fixtures (rng, store), for its test files

apply_local_ray_env()

# The tiers (pyproject.toml's markers): a test is marked by what it needs, and an unmarked one is in the fast tier.
MODEL_LIBRARIES = ("tensorflow", "ultralytics")
"""What loading or making a model imports. Not torch: alone it loads no model, and the runs that may import
TensorFlow import it first (pytest_collection_finish)."""
NEEDS_MODEL_LIBRARIES = ("models", "train", "cluster")


def model_libraries_loaded() -> set[str]:
    return {name for name in MODEL_LIBRARIES if name in sys.modules}


def needs_model_libraries(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(marker) for marker in NEEDS_MODEL_LIBRARIES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `data` are skipped, with the reason, on a checkout without the photos beside it."""
    if SHARED_DATA.is_dir():
        return
    missing = pytest.mark.skip(reason=f"reads ../shared, beside the checkout: {SHARED_DATA} is missing")
    for item in items:
        if item.get_closest_marker("data"):
            item.add_marker(missing)


def pytest_collection_finish(session: pytest.Session) -> None:
    """torch, with the compiler parts ultralytics pulls in lazily (dynamo, inductor, torchvision ops), is loaded
    before any test imports TensorFlow: importing these after TensorFlow can segfault the process. A run that
    selected no test which may import TensorFlow (the fast tier) is spared the seconds it costs."""
    if not any(needs_model_libraries(item) for item in session.items):
        return
    if "tensorflow" in sys.modules:
        raise pytest.UsageError("a test module imports TensorFlow at its top: import it inside the tests that need it")
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch._inductor.config  # noqa: F401
    import torchvision.ops  # noqa: F401


@pytest.fixture(autouse=True)
def model_free_unless_marked(request: pytest.FixtureRequest):
    """Fails the unmarked test that imports TensorFlow or ultralytics, so the fast tier stays model-free (and fast)."""
    if needs_model_libraries(request.node):
        yield
        return
    before = model_libraries_loaded()
    yield
    if imported := model_libraries_loaded() - before:
        pytest.fail(f"{request.node.nodeid} imported {', '.join(sorted(imported))}: mark it models, train or cluster")


EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that selected no models, train or cluster test (the fast tier) fails if TensorFlow or ultralytics
    was imported anyway: at collection (a test module imports it at its top) or by a module's fixture."""
    session.config.stash[EXIT_STATUS] = int(exitstatus)
    if any(needs_model_libraries(item) for item in session.items) or not (loaded := model_libraries_loaded()):
        return
    print(f"\nmodel-free run, yet {', '.join(sorted(loaded))} was imported: a test module imports it at its top, "
          "or an unmarked test's fixture does; mark that test models, train or cluster", file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[EXIT_STATUS] = int(session.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """A run that loaded TensorFlow, torch, LiteRT and ONNX Runtime into this one process leaves without running
    their C++ static destructors: once all of `make test` had passed and its summary was printed, one of them
    crashed at interpreter exit (SIGSEGV) and turned the run's exit status into a failure. The results are final
    here; the status is the session's (a replica or a pipeline command loads one runtime and exits normally)."""
    if "tensorflow" not in sys.modules or EXIT_STATUS not in config.stash:
        return
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[EXIT_STATUS])
