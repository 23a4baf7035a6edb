"""The Ray Serve graph: Recognizer (HTTP ingress) → Detector (YOLO) → Classifier (ImageNet-pretrained
EfficientNet-Lite0 + a head trained on shop photos)."""
