"""The Ray Serve graph: Recognizer (HTTP ingress) → Detector (YOLO) → Classifier (EfficientNet-Lite0, fine-tuned)."""
