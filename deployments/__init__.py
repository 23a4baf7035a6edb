"""The Ray Serve graph: Recognizer (HTTP ingress) → Detector (YOLO) → Classifier (EfficientNet-B0)."""
