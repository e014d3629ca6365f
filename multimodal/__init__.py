"""multimodal: a classifier and regressor over CSV data that mixes free text, numbers, categories and images,
packaged as a SageMaker bring-your-own-container algorithm.

The package is layered; imports only point down (tools → sagemaker → core):

* ``multimodal.core`` — the estimator (``MultimodalEstimator``, restricted to classes by ``MultimodalClassifier``
  and to numbers by ``MultimodalRegressor``) and what it is built of. Knows nothing of
  SageMaker.
* ``multimodal.sagemaker`` — SageMaker's container contracts as thin layers over the estimator:
  ``training`` (the ``/opt/ml`` training job) and ``serving`` (the inference server).
* ``multimodal.tools`` — beside them: the ``multimodal`` command, local emulation of SageMaker jobs,
  CreateAlgorithm registration, generated example data.

Nothing heavy is imported here: the estimators load numpy, pandas and AutoGluon on first use, so that
``multimodal-serve`` binds its port within SageMaker's 250 ms.
"""
from multimodal._version import __version__
from multimodal.core.errors import (
    ClusterError,
    DataError,
    HyperparameterError,
    NotFittedError,
    TimeBudgetError,
)

ESTIMATORS = ("MultimodalEstimator", "MultimodalClassifier", "MultimodalRegressor")
__all__ = [*ESTIMATORS, "ClusterError", "DataError", "HyperparameterError", "NotFittedError", "TimeBudgetError",
           "__version__"]


def __getattr__(name: str):
    if name in ESTIMATORS:
        from multimodal.core import estimator
        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
