"""The estimator: ``MultimodalEstimator`` and its restrictions ``MultimodalClassifier`` and ``MultimodalRegressor``
(``estimator``), and what it is built of.

* the estimator's parts: ``targets`` (classes or a number: ``problem_type``, decided once into a
  ``ClassTarget`` or ``NumberTarget``), ``featurize`` (rows prepared and embedded), ``executors`` (where reading
  and the experts run: this machine, or a Ray cluster through ``cluster``, which node fits which expert: ``placement``), ``selection`` (the fusion's fit: the
  network or the weighted ensemble), ``persistence`` (the model directory written and read; its names in
  ``artifact``);
* rows and columns: ``schema`` (column roles from header suffixes, imputation, label encoding, the number
  rules), ``ingest`` (rows read in batches, embedded as they arrive), ``imagerefs`` (where an image value comes
  from), ``images`` and ``text`` (encoders), ``views`` and ``reduction`` (each expert's input columns; principal
  components);
* models: ``experts`` (one bagged AutoGluon predictor per modality), ``fusion`` (the network fusing the experts'
  out-of-fold outputs), ``scores``, ``timebudget`` (the seconds of each stage and expert), ``parallel`` (folds
  side by side on one machine);
* the rest: ``hyperparameters`` (names, types, ranges and defaults, read from
  ``hyperparameter_specification.json``), ``jsonsafe``, ``errors`` (the public exceptions), ``resources``.

It may import only itself and third-party libraries: nothing from ``multimodal.sagemaker`` or
``multimodal.tools``, and nothing of ``/opt/ml``, HTTP or SageMaker.
"""
