"""multimodal: a classifier over CSV data that mixes free text, numbers, categories and images, packaged as a
SageMaker bring-your-own-container algorithm.

The package is layered; imports only point down (tools → sagemaker → core):

* ``multimodal.core`` — the estimator, ``MultimodalClassifier``, and what it is built of. Knows nothing of
  SageMaker.
* ``multimodal.sagemaker`` — SageMaker's container contracts as thin layers over the estimator:
  ``training`` (the ``/opt/ml`` training job) and ``serving`` (the inference server).
* ``multimodal.tools`` — beside them: the ``multimodal`` command, local emulation of SageMaker jobs,
  CreateAlgorithm registration, generated example data.

Nothing heavy is imported here: ``MultimodalClassifier`` loads numpy, pandas and AutoGluon on first use, so that
``multimodal-serve`` binds its port within SageMaker's 250 ms.
"""
__version__ = "0.1.0"

from multimodal.core.errors import (  # noqa: E402
    ClusterError,
    DataError,
    HyperparameterError,
    NotFittedError,
    TimeBudgetError,
)

__all__ = ["MultimodalClassifier", "ClusterError", "DataError", "HyperparameterError", "NotFittedError", "TimeBudgetError",
           "__version__"]


def __getattr__(name: str):
    if name == "MultimodalClassifier":
        from multimodal.core.classifier import MultimodalClassifier
        return MultimodalClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
