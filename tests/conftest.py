# The local Ray every test starts is the one `make serve` starts (Makefile): token auth on, node on 127.0.0.1.
# Set before anything imports Ray, which reads these names at import.
import pytest

from load_tests.local_ray import apply_local_ray_env
from pipeline.core.paths import SHARED_DATA

apply_local_ray_env()

# torch, with the compiler parts ultralytics pulls in lazily (dynamo, inductor, torchvision ops), is loaded
# before any test imports TensorFlow: importing these after TensorFlow can segfault the process.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
import torch._inductor.config  # noqa: F401
import torchvision.ops  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `data` are skipped, with the reason, on a checkout without the photos beside it."""
    if SHARED_DATA.is_dir():
        return
    missing = pytest.mark.skip(reason=f"reads ../shared, beside the checkout: {SHARED_DATA} is missing")
    for item in items:
        if item.get_closest_marker("data"):
            item.add_marker(missing)
