# torch, with the compiler parts ultralytics pulls in lazily (dynamo, inductor, torchvision ops), is loaded
# before any test imports TensorFlow: importing these after TensorFlow can segfault the process.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
import torch._inductor.config  # noqa: F401
import torchvision.ops  # noqa: F401
