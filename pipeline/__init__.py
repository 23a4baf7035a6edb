"""The serving core (pipeline.core) and, beside it, the training pipeline that turns labelled photos into the
models in model_label/: training, evaluation and export."""
