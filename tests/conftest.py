# The local Ray every test starts is the one `make serve` starts (Makefile): token auth on, node on 127.0.0.1.
# Set before anything imports Ray, which reads these names at import.
from load_tests.local_ray import apply_local_ray_env

apply_local_ray_env()

# torch, with the compiler parts ultralytics pulls in lazily (dynamo, inductor, torchvision ops), is loaded
# before any test imports TensorFlow: importing these after TensorFlow can segfault the process.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
import torch._inductor.config  # noqa: F401
import torchvision.ops  # noqa: F401
