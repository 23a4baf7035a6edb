import torch  # noqa: F401  (torch before TensorFlow: the other order can segfault)
