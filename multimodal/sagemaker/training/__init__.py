"""The training job: ``multimodal-train`` (``train`` in the training image, ``python -m multimodal.sagemaker.training``).

``job`` (the entrypoint: which host does what), ``steps`` (the host that trains: configure, run, fail with a
reason), ``channels`` (the input channels, streamed in record batches: files, gzip, Pipe mode, RFC 4180),
``imagechannel`` (the images channel and the check of its paths), ``raycluster`` (several instances: one Ray
cluster of every host), ``hosts`` with ``head_server`` and ``head_client`` (the head's status service: the other
hosts wait for its result and exit with it), ``metrics`` (the metric lines and the MetricDefinitions that parse
them), ``reports`` (what goes to ``output/data``).

Imports ``multimodal.core`` and ``multimodal.sagemaker`` (``contract``, ``environment``, ``opt_ml``); not
``serving``, not ``tools``.
"""
