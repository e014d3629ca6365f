"""The training job: ``multimodal-train`` (``train`` in the training image, ``python -m multimodal.sagemaker.training``).

``job`` (the entrypoint: configuration, the run, failures), ``channels`` (the input channels: files, gzip, Pipe
mode, RFC 4180), ``hosts`` (several instances: the first trains, the others wait for its result), ``metrics``
(the metric lines and the MetricDefinitions that parse them), ``reports`` (what goes to ``output/data``).

Imports ``multimodal.core`` and ``multimodal.sagemaker.contract``; not ``serving``, not ``tools``.
"""
