"""Training pipeline: turns labelled photos into the models that the serving graph loads from model_label/."""
