"""Tooling beside the product: ``cli`` (the ``multimodal`` command), ``local_training`` and
``local_transform`` (SageMaker training jobs and batch transforms emulated on this machine, with or without the
Docker images), ``registration`` (the CreateAlgorithm request), ``synthetic`` (generated example and test
data).

May import ``multimodal.core`` and ``multimodal.sagemaker``; nothing there imports ``tools``.
"""
