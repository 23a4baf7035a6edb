"""The serving core: how a photo becomes an answer, shared by the Ray Serve deployments, evaluation and the
benchmarks. It imports numpy, Pillow, OpenCV and PyYAML only: the CPU-only ingress imports it, so TensorFlow,
torch and ultralytics stay out (tests/test_core_imports.py checks it in a fresh interpreter); the model calls
are passed in."""
