"""The serving core and, beside it, the pipeline that turns labelled photos into the models in model_label/,
in packages by job. Each imports only from the ones before it in this order (tests/test_pipeline_layers.py
checks every import, function-local ones included):

    core                    how a photo becomes an answer, and the catalog it is matched against (core.catalog);
                            the only part of pipeline/ that deployments/ import
    data                    the labelled photos and their splits
    classification_metrics  top-k accuracy, bootstrap intervals, the unknown threshold: what training, evaluation
                            and release measure with
    train                   the classifier (torch, ported to a TF SavedModel) and the YOLO detector
    evaluation              the shipped models measured through serving's photo→answer loop, its report and the
                            pictures of evaluation and training (docs/figures)
    release                 model_label/ written: the export, the CPU runtimes, the int8 detector, the catalog's
                            rule and gallery, and the catalog's command line (re-embedding for a new classifier)

torch, TensorFlow, ultralytics, onnx and matplotlib are imported inside the functions that use them, so that importing
a module (a command's --help, a test, the serving core) loads none of them.
"""
