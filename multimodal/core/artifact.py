"""The saved model's layout: names shared by the estimator that writes it and the layers that look for it.

Imports nothing, so that the server's launcher can check for a model before any heavy import.
"""
FORMAT = "multimodal-classifier"
FORMAT_VERSION = 1
CONFIG_FILE = "model_config.json"  # written last: its presence marks a complete model
EXPERTS_DIR = "modality"
FUSION_DIR = "wholistic"
