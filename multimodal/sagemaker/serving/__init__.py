"""The inference server: ``multimodal-serve`` (``serve`` in the inference image, ``python -m multimodal.sagemaker.serving``).

``launcher`` (settings from the environment, gunicorn, worker sizing, exit statuses), ``front`` (each worker's
asyncio front: reads requests without holding a thread, answers ``/ping`` itself), ``app`` (the Flask app:
``/ping``, ``/execution-parameters``, ``/invocations``, the model thread), ``payloads`` (request bodies → records,
predictions → response bodies), ``errors`` (one exception per HTTP outcome, turned into a response in one place).

Imports ``multimodal.core`` and ``multimodal.sagemaker.contract``; not ``training``, not ``tools``. The launcher
imports nothing heavy before gunicorn binds the port (SageMaker: connections accepted within 250 ms).
"""
