"""The saved model's layout: names shared by the estimator that writes it and the layers that look for it.

Imports nothing, so that the server's launcher can check for a model before any heavy import.
"""
FORMAT = "multimodal-classifier"
FORMAT_VERSION = 6
# Version 1 (before the joint expert, missing indicators and text encoders) and 2 (before regression: no
# problem_type, always classes) still load: their models predict as they always did. Version 4: the fusion
# directory holds either the network (fusion.keras) or the weighted ensemble of the experts (ensemble.json).
# Version 5: "reduced_embeddings" lists the image columns every expert reads as principal components. Version 6:
# the fusion directory may hold the blend of the two (blend.json, the network's file and the ensemble's folder),
# which a version-5 reader would take for the network alone.
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
VERSION_1_HYPERPARAMETERS = {"text_model": "ngrams", "joint_expert": False}
# Hyperparameters added after models were saved without them: the value that says what those models did.
ADDED_HYPERPARAMETERS = {"reduce_image_embeddings": "false", "use_leftover_time": "false"}
# model_config.json's "problem_type" (a fitted model's problem_type_): one of the kinds of classes, or a number
CLASSIFICATION = ("binary", "multiclass")
REGRESSION = "regression"
CONFIG_FILE = "model_config.json"  # written last: its presence marks a complete model
EXPERTS_DIR = "modality"
FUSION_DIR = "wholistic"
REDUCERS_DIR = "reducers"  # principal components of embedding columns for the joint expert (.npz)
