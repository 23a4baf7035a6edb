"""The training runs: the classifier fine-tuned in torch and ported to the TF SavedModel that serving loads
(finetune, cosine_head, efficientnet_lite), and the one-class YOLO detector (yolo_detector)."""
