"""The training runs: the classifier fine-tuned in torch and ported to the TF SavedModel that serving loads
(finetune: the run and its export; finetune_config: its options and run folder; finetune_network: the torch
network and its steps; cosine_head; efficientnet_lite: the pretrained network and the port), and the one-class
YOLO detector (yolo_detector). torch, TensorFlow and ultralytics are imported inside the functions that use them."""
