"""The inference server: ``multimodal-serve`` (``serve`` in the inference image, ``python -m multimodal.sagemaker.serving``).

``launcher`` (settings from the environment, gunicorn, worker sizing, exit statuses), ``front`` (each worker's
asyncio front: reads requests without holding a thread, answers ``/ping`` itself), ``app`` (the Flask app's
routes: ``/ping``, ``/execution-parameters``, ``/invocations``); a request's way through it, in order: ``decode``
(request bodies → records), ``records`` (a batch of records: checks, prediction with bad-record isolation,
outcomes), ``encode`` (outcomes → response bodies); ``model_slot`` (the model's thread, its load and trial
prediction), ``kinds`` (what differs for a model of classes or of numbers, decided once per model), ``errors``
(one exception per HTTP outcome, turned into a response in one place).

Imports ``multimodal.core`` and ``multimodal.sagemaker.contract``; not ``training``, not ``tools``. The launcher
imports nothing heavy before gunicorn binds the port (SageMaker: connections accepted within 250 ms).
"""
