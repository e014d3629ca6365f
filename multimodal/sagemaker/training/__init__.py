"""The training job: ``multimodal-train`` (``train`` in the training image, ``python -m multimodal.sagemaker.training``).

``job`` (the entrypoint: configuration, the run, failures), ``channels`` (the input channels, streamed in record
batches: files, gzip, Pipe mode, RFC 4180), ``raycluster`` (several instances: one Ray cluster of every host),
``hosts`` (the head's status service: the other hosts wait for its result and exit with it), ``metrics``
(the metric lines and the MetricDefinitions that parse them), ``reports`` (what goes to ``output/data``).

Imports ``multimodal.core`` and ``multimodal.sagemaker.contract``; not ``serving``, not ``tools``.
"""
