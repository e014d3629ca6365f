"""MultimodalClassifier describes itself as a scikit-learn estimator does, from the spec file alone."""
import inspect

import pandas as pd
import pytest

import multimodal
from multimodal import MultimodalClassifier
from multimodal.core import errors
from multimodal.core.hyperparameters import defaults, specification


def test_the_signature_is_the_spec_file():
    spec = specification()
    parameters = inspect.signature(MultimodalClassifier).parameters
    assert list(parameters) == list(spec)  # names, in the spec's order
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == spec[name].default_value and type(parameter.default) is spec[name].python_type
    for name, hp in spec.items():  # help() documents each one
        assert f"{name} : " in MultimodalClassifier.__doc__ and hp.description in MultimodalClassifier.__doc__


def test_get_params_set_params_repr_and_clone():
    from sklearn.base import clone
    model = MultimodalClassifier(n_mins=10, quality="toy")
    assert model.get_params() == {**defaults(), "n_mins": 10, "quality": "toy"}
    assert repr(model) == "MultimodalClassifier(n_mins=10, quality='toy')"
    assert eval(repr(model), {"MultimodalClassifier": MultimodalClassifier}).get_params() == model.get_params()
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert model.set_params(seed=3, learning_rate=0.01) is model and (model.seed, model.learning_rate) == (3, 0.01)
    with pytest.raises(errors.HyperparameterError, match="quality='ultra' is not one of"):
        model.set_params(quality="ultra", seed=4)
    assert (model.quality, model.seed) == ("toy", 3)  # a refused change changes nothing
    assert repr(MultimodalClassifier()) == "MultimodalClassifier()"


def test_an_unfitted_model_says_so():
    model = MultimodalClassifier()
    for call in (lambda: model.predict(pd.DataFrame({"a_text": ["x"]})), lambda: model.save("unused"),
                 lambda: model.expert_names_):
        with pytest.raises(errors.NotFittedError, match=r"not fitted: call fit\(\) or MultimodalClassifier.load\(\)"):
            call()


def test_the_public_errors_are_exported():
    for name in ("DataError", "HyperparameterError", "TimeBudgetError", "NotFittedError"):
        assert getattr(multimodal, name) is getattr(errors, name) and name in multimodal.__all__
    assert issubclass(errors.DataError, ValueError) and issubclass(errors.HyperparameterError, ValueError)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b'{"format": "multimodal-classifier", "format_ver',
                                     b"[1, 2, 3]"])
def test_a_damaged_model_config_is_an_error_that_names_the_file(tmp_path, content):
    """A truncated or garbage model_config.json (an interrupted copy, a wrong file) must say which file is broken,
    not only "UnicodeDecodeError" or "JSONDecodeError"."""
    (tmp_path / "model_config.json").write_bytes(content)
    with pytest.raises(ValueError, match=f"{tmp_path / 'model_config.json'}"):
        MultimodalClassifier.load(tmp_path)
