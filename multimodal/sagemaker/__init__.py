"""SageMaker's container contracts, as thin layers over ``multimodal.core.estimator.MultimodalEstimator``.

``training`` is the training job (``train`` in the training image: ``/opt/ml`` in, model and reports out) and
``serving`` the inference server (``serve`` in the inference image). ``contract`` holds the platform facts they
share (content types, how batch transform splits records, the one ``ConfigError``), ``environment`` every
environment variable of the training side, ``opt_ml`` the ``/opt/ml`` layout (configuration files, channel names,
the failure file, the model's publication).

May import ``multimodal.core``; never ``multimodal.tools``. ``training`` and ``serving`` do not import each other.
"""
