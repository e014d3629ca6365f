"""The CreateAlgorithm request, built from the repository's own definitions (spec file, metrics, formats).

One algorithm serves classification and regression (the ``problem_type`` hyperparameter): its description,
channels, MetricDefinitions and tuning objectives cover both."""
from __future__ import annotations

import logging
from typing import Any

from multimodal.core.hyperparameters import load_spec_document
from multimodal.sagemaker.contract import API_BATCH_STRATEGIES, CSV, FORMATS, IMAGE_CONTENT_TYPE, MULTI_RECORD
from multimodal.sagemaker.opt_ml import IMAGES_CHANNEL
from multimodal.sagemaker.training.metrics import metric_definitions, tuning_objectives

log = logging.getLogger(__name__)

# CPU instances suit the default experts; GPU ones speed up image embedding.
TRAINING_INSTANCE_TYPES = ["ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge", "ml.c5.2xlarge",
                           "ml.c5.4xlarge", "ml.c5.9xlarge", "ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g5.xlarge",
                           "ml.g5.2xlarge"]
TRANSFORM_INSTANCE_TYPES = ["ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge",
                            "ml.g4dn.xlarge"]
REALTIME_INSTANCE_TYPES = ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
                           "ml.g4dn.xlarge"]
DESCRIPTION = ("Classification (binary, multiclass) or regression for CSV data mixing free text, numbers, categories "
               "and base64 images: one AutoGluon expert per modality, fused by a neural network trained on the "
               "experts' out-of-fold predictions. The problem_type hyperparameter picks the task (auto: from the "
               "labels). Inference returns class labels and probabilities, or predicted values.")


def training_channels() -> list[dict]:
    common = {"SupportedContentTypes": [CSV], "SupportedCompressionTypes": ["None", "Gzip"],
              "SupportedInputModes": ["File", "Pipe", "FastFile"]}
    return [
        {"Name": "train", "IsRequired": True, **common,
         "Description": "CSV with a header: ID, label (a class, or a number for regression) and feature columns "
                        "suffixed _text, _num, _cat or _image. Every .csv / .csv.gz file in the channel is read; "
                        "all must share one header."},
        {"Name": "validation", "IsRequired": False, **common,
         "Description": "Optional CSV with the training header: early-stops the fusion network and is reported."},
        {"Name": IMAGES_CHANNEL, "IsRequired": False, "SupportedContentTypes": [IMAGE_CONTENT_TYPE],
         "SupportedCompressionTypes": ["None"], "SupportedInputModes": ["File", "FastFile"],
         "Description": "Optional image files (JPEG, PNG, GIF, WebP, BMP) that _image values name by their path "
                        "relative to the channel's S3 prefix (photos/123.jpg). File or FastFile mode; "
                        "FullyReplicated, also when train is sharded."},
    ]


def build_request(*, name: str, training_image: str, inference_image: str, description: str = DESCRIPTION,
                  validation_role: str | None = None, validation_train_s3: str | None = None,
                  validation_transform_s3: str | None = None, validation_output_s3: str | None = None,
                  validation_instance_type: str = "ml.m5.xlarge", certify_for_marketplace: bool = False,
                  image_columns: tuple[str, ...] = ()) -> dict:
    """The whole CreateAlgorithm request. A validation profile is added when its role and S3 URIs are given.

    ``image_columns``: names of _image columns whose experts' metrics should also get MetricDefinitions
    (the fused metrics always do, and the text/num/cat/joint experts' as far as the limit of 40 allows).
    The algorithm serves classification and regression: MetricDefinitions and SupportedTuningJobObjectiveMetrics
    come from ``multimodal.sagemaker.training.metrics`` and cover both problem types (priority order there).
    """
    request: dict[str, Any] = {
        "AlgorithmName": name,
        "AlgorithmDescription": description,
        "TrainingSpecification": {
            "TrainingImage": training_image,
            "SupportedHyperParameters": load_spec_document(),
            "SupportedTrainingInstanceTypes": TRAINING_INSTANCE_TYPES,
            # Several instances form one Ray cluster: embedding and the experts are spread over them.
            "SupportsDistributedTraining": True,
            "MetricDefinitions": metric_definitions(image_columns),
            "TrainingChannels": training_channels(),
            "SupportedTuningJobObjectiveMetrics": tuning_objectives(),
        },
        "InferenceSpecification": {
            "Containers": [{"Image": inference_image}],
            "SupportedTransformInstanceTypes": TRANSFORM_INSTANCE_TYPES,
            "SupportedRealtimeInferenceInstanceTypes": REALTIME_INSTANCE_TYPES,
            "SupportedContentTypes": list(FORMATS),
            "SupportedResponseMIMETypes": list(FORMATS),
        },
        "CertifyForMarketplace": certify_for_marketplace,
    }
    given = [validation_role, validation_train_s3, validation_transform_s3, validation_output_s3]
    if any(given) and not all(given):
        raise ValueError("a validation profile needs all of --validation-role, --validation-train-s3, "
                         "--validation-transform-s3 and --validation-output-s3")
    if all(given):
        request["ValidationSpecification"] = validation_specification(
            role=validation_role, train_s3=validation_train_s3, transform_s3=validation_transform_s3,
            output_s3=validation_output_s3, instance_type=validation_instance_type)
    return request


def validation_specification(*, role: str, train_s3: str, transform_s3: str, output_s3: str,
                             instance_type: str) -> dict:
    """One validation profile: a training job on ``train_s3`` and a batch transform of ``transform_s3``."""
    return {
        "ValidationRole": role,
        "ValidationProfiles": [{
            "ProfileName": "generated-data",
            "TrainingJobDefinition": {
                "TrainingInputMode": "File",
                "HyperParameters": {"n_mins": "10", "quality": "light", "image_model": "resnet50"},
                "InputDataConfig": [{"ChannelName": "train", "ContentType": CSV, "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": train_s3,
                                     "S3DataDistributionType": "FullyReplicated"}}}],
                "OutputDataConfig": {"S3OutputPath": output_s3},
                "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1,
                                   "VolumeSizeInGB": 30},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            },
            "TransformJobDefinition": {
                "MaxConcurrentTransforms": 1,
                "MaxPayloadInMB": 6,
                "BatchStrategy": API_BATCH_STRATEGIES[MULTI_RECORD],
                "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                   "S3Uri": transform_s3}},
                                   "ContentType": CSV, "SplitType": "Line"},
                "TransformOutput": {"S3OutputPath": output_s3, "Accept": CSV,
                                    "AssembleWith": "Line"},
                "TransformResources": {"InstanceType": instance_type, "InstanceCount": 1},
            },
        }],
    }


def validate_request(request: dict) -> None:
    """Check the request against botocore's SageMaker API model, offline; raises on any violation."""
    import botocore.session
    from botocore.validate import validate_parameters
    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(request, model.operation_model("CreateAlgorithm").input_shape)


def create_algorithm(request: dict, *, region: str | None = None) -> dict:
    import boto3
    validate_request(request)
    response = boto3.client("sagemaker", region_name=region).create_algorithm(**request)
    log.info("created algorithm %s", response.get("AlgorithmArn"))
    return response
