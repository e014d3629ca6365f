"""The estimator: ``MultimodalEstimator`` and its restrictions ``MultimodalClassifier`` and ``MultimodalRegressor``
(``estimator``), and what it is built of.

``schema`` (column roles from header suffixes, imputation, label encoding, the number rules), ``targets``
(classes or a number: ``problem_type``), ``hyperparameters`` (names, types, ranges and defaults, read from
``hyperparameter_specification.json``), ``images`` (base64 decoding, pretrained image encoders, streamed
embedding), ``experts`` (one bagged AutoGluon predictor per modality), ``fusion`` (the network fusing the
experts' out-of-fold outputs), ``scores`` (accuracy, log-loss, confusion matrices; rmse, mae, r2),
``artifact`` (the saved model's file names), ``jsonsafe`` (numpy and NaN to JSON), ``errors`` (the public
exceptions), ``ingest`` (rows read in batches, embedded as they arrive), ``views`` (each expert's input
columns), ``timebudget`` (the seconds of each stage and expert), ``parallel`` (folds side by side on one
machine), ``cluster`` (a fit spread over the nodes of a Ray cluster), ``text``
(sentence encoders), ``reduction`` (principal components for the joint expert).

It may import only itself and third-party libraries: nothing from ``multimodal.sagemaker`` or
``multimodal.tools``, and nothing of ``/opt/ml``, HTTP or SageMaker.
"""
