import numpy as np
import pytest
import pandas as pd

from multimodal.core.experts import QUALITY, align, hyperparameters_for, modality_labels, refits


def test_probabilities_are_aligned_to_the_experts_classes():
    proba = pd.DataFrame({2: [0.5, 0.1], 0: [0.5, 0.9]})  # class 1 never predicted, columns out of order
    np.testing.assert_array_equal(align(proba, [0, 1, 2], 2), [[0.5, 0.0, 0.5], [0.9, 0.0, 0.1]])


def test_oof_rows_autogluon_duplicated_or_dropped_are_handled():
    # AutoGluon copies rows of classes too rare to bag (new labels ≥ n_rows) and may omit dropped ones
    proba = pd.DataFrame({0: [0.2, 0.7, 0.6, 0.3], 1: [0.8, 0.3, 0.4, 0.7]}, index=[0, 2, 3, 4])
    out = align(proba, [0, 1], 4)
    np.testing.assert_array_equal(out[[0, 2, 3]], [[0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    assert np.isnan(out[1]).all()  # left for the caller to predict directly


def test_insufficient_rows_get_the_extra_class():
    y = np.array([0, 1, 2, 1])
    assert modality_labels(y, np.array([False, True, False, True]), 3).tolist() == [0, 3, 2, 3]


def test_every_quality_maps_to_an_installed_autogluon_preset():
    for quality in QUALITY:
        config = hyperparameters_for(quality)
        assert config and "FASTAI" not in config  # fastai is not installed: never asked for


def test_an_expert_left_no_time_falls_back_to_a_small_model(tmp_path, monkeypatch, caplog):
    import pytest

    from multimodal.core import experts
    pytest.importorskip("autogluon.tabular")
    # FASTAI is not installed, so AutoGluon trains nothing, as when the budget is already spent
    monkeypatch.setattr(experts, "hyperparameters_for", lambda quality, modality=None: {"FASTAI": {}})
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x_num": rng.normal(size=90), "y_num": rng.normal(size=90)})
    target = np.where(rng.random(90) < 0.1, 2, (frame["x_num"] > 0).astype(int))  # class 2: insufficient
    spec = experts.ExpertSpec("num", "num", ["x_num", "y_num"])
    expert, oof = experts.Expert.fit(spec, frame, target, path=tmp_path / "num", quality="toy", n_folds=2,
                                     time_limit=5, seed=0, text_columns=[])
    assert "fitting one small LightGBM instead" in caplog.text
    assert oof.shape == (90, 3) and not np.isnan(oof).any()
    assert expert.outputs(frame.head(3)).shape == (3, 3)


def _numeric_data(monkeypatch, rows: int, seed: int, rounds: int):
    """A numeric expert's spec, frame and binary target (x_num > 0), with a LightGBM-only portfolio of ``rounds``."""
    from multimodal.core import experts
    pytest.importorskip("autogluon.tabular")
    monkeypatch.setattr(experts, "hyperparameters_for",
                        lambda quality, modality=None: {"GBM": {"num_boost_round": rounds}})
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x_num": rng.normal(size=rows), "y_num": rng.normal(size=rows)})
    target = (frame["x_num"] > 0).astype(int).to_numpy()
    return experts.ExpertSpec("num", "num", ["x_num", "y_num"]), frame, target


def _small_expert(tmp_path, monkeypatch):
    from multimodal.core import experts
    spec, frame, target = _numeric_data(monkeypatch, rows=80, seed=1, rounds=10)
    expert, _ = experts.Expert.fit(spec, frame, target, path=tmp_path / "num", quality="toy", n_folds=2,
                                   time_limit=30, seed=0, text_columns=[])
    return spec, expert, frame


def test_loaded_experts_keep_their_models_in_memory_unless_too_large(tmp_path, monkeypatch, caplog):
    from multimodal.core import experts
    spec, fitted, frame = _small_expert(tmp_path, monkeypatch)
    loaded = experts.Expert.load(spec, tmp_path / "num", fitted.classes)
    persisted = set(loaded.predictor._trainer.models)
    assert loaded.predictor.model_best in persisted and len(persisted) >= 2  # the ensemble and its base model
    np.testing.assert_array_equal(loaded.outputs(frame.head(5)), fitted.outputs(frame.head(5)))

    # over the memory share, AutoGluon's own rule: nothing persisted, models read from disk at each prediction
    from autogluon.tabular import TabularPredictor
    predictor = TabularPredictor.load(str(tmp_path / "num"), verbosity=0)
    assert not experts.persist(predictor, tmp_path / "num", max_memory=1e-12)
    assert not predictor._trainer.models and "not persisting its models in memory" in caplog.text
    np.testing.assert_array_equal(experts.align(predictor.predict_proba(frame.head(5), as_multiclass=True),
                                                fitted.classes, 5), fitted.outputs(frame.head(5)))


def test_package_metadata_is_read_once_while_loading_several_experts(tmp_path, monkeypatch):
    from autogluon.tabular.predictor import predictor as predictor_module

    from multimodal.core import experts
    spec, fitted, frame = _small_expert(tmp_path, monkeypatch)
    calls = []
    original = predictor_module.get_autogluon_metadata

    def counting() -> dict:
        calls.append(1)
        return original()

    monkeypatch.setattr(predictor_module, "get_autogluon_metadata", counting)
    with experts.shared_autogluon_metadata():
        first = experts.Expert.load(spec, tmp_path / "num", fitted.classes)
        second = experts.Expert.load(spec, tmp_path / "num", fitted.classes)
    assert len(calls) == 1
    assert predictor_module.get_autogluon_metadata is counting  # restored after the block
    experts.Expert.load(spec, tmp_path / "num", fitted.classes)
    assert len(calls) == 2
    np.testing.assert_array_equal(first.outputs(frame), second.outputs(frame))


def _long_reviews(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Reviews of about 150 words (commas and quotes included), the class in a few of their words."""
    # letters only: AutoGluon's n-gram vectoriser drops digits
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = np.array(["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(3000)])
    markers = np.array(["excellent", "average", "dreadful"])
    target = rng.integers(0, 3, size=n)
    texts = []
    for label in target:
        words = rng.choice(vocabulary, size=150)
        words[rng.integers(0, 150, size=5)] = markers[label]
        texts.append(" ".join(words[:70]) + ', "quoted, part" ' + " ".join(words[70:]) + ".")
    return pd.DataFrame({"review_text": texts}), target


@pytest.mark.slow
def test_an_expert_whose_text_preprocessing_outlasts_its_share_still_ends_with_a_model(tmp_path, caplog):
    """AutoGluon refuses with "Not enough time left to train models" (an AssertionError) when its n-gram
    preprocessing alone uses the whole limit: 3,000 long reviews take seconds to vectorise, far over a 1 s share.
    The job must end with a model (the small fallback), not fail."""
    from multimodal.core import experts
    frame, target = _long_reviews(3000, np.random.default_rng(3))
    spec = experts.ExpertSpec("text", "text", ["review_text"])
    expert, oof = experts.Expert.fit(spec, frame, target, path=tmp_path / "text", quality="toy", n_folds=2,
                                     time_limit=1, seed=0, text_columns=["review_text"])
    assert "before training a model" in caplog.text  # the refusal was met, not avoided
    assert "fitting one small LightGBM instead" in caplog.text
    assert oof.shape == (3000, 3) and not np.isnan(oof).any()
    assert (oof.argmax(axis=1) == target).mean() > 0.5  # a real model: the class words are learnt
    assert expert.outputs(frame.head(4)).shape == (4, 3)


@pytest.mark.slow
def test_refit_full_predicts_with_one_model_per_bag_fitted_on_every_row(tmp_path, monkeypatch):
    """refit_full: the saved expert holds one model per chosen model instead of one per fold, predicts with it
    after loading, and its out-of-fold outputs (what the fusion learns from) are still the bagged ones."""
    from multimodal.core import experts
    spec, frame, target = _numeric_data(monkeypatch, rows=120, seed=2, rounds=20)
    fit = dict(quality="toy", n_folds=3, time_limit=60, seed=0, text_columns=[])
    bagged, bagged_oof = experts.Expert.fit(spec, frame, target, path=tmp_path / "bagged", **fit)
    refit, refit_oof = experts.Expert.fit(spec, frame, target, path=tmp_path / "refit", refit_full=True, **fit)
    np.testing.assert_allclose(refit_oof, bagged_oof)
    loaded = experts.Expert.load(spec, tmp_path / "refit", refit.classes)
    assert loaded.predictor.model_best.endswith("_FULL")
    children = {m: loaded.predictor._trainer.load_model(m).n_children for m in loaded.predictor.model_names()
                if not m.startswith("WeightedEnsemble")}
    assert children and set(children.values()) == {1}, children  # one model each, where the bags had 3
    bagged_children = {bagged.predictor._trainer.load_model(m).n_children for m in bagged.predictor.model_names()
                       if not m.startswith("WeightedEnsemble")}
    assert bagged_children == {3}
    proba = loaded.outputs(frame)
    assert proba.shape == (120, 2) and (proba.argmax(axis=1) == target).mean() > 0.9


def test_refit_full_auto_refits_at_best_only():
    assert refits("auto", "best") and not refits("auto", "toy") and not refits("auto", "light")
    assert refits("true", "toy") and not refits("false", "best")


REALMLP_IN_A_FRESH_PROCESS = """
import sys
import numpy as np, pandas as pd
from multimodal.core.experts import Expert, ExpertSpec, hyperparameters_for
config = hyperparameters_for("best", "image")  # the torchvision workaround comes with it
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 16)).astype(np.float32)
frame = pd.DataFrame(x, columns=[f"photo_image_{i}" for i in range(16)])
target = (x[:, 0] + x[:, 1] > 0).astype(int)
spec = ExpertSpec("photo_image", "image", ["photo_image"])
import multimodal.core.experts as experts
experts.hyperparameters_for = lambda quality, modality=None: {"REALMLP": [{"n_epochs": 3}]}  # RealMLP alone, fast
expert, oof = Expert.fit(spec, frame, target, path=__import__("pathlib").Path(sys.argv[1]) / "e", quality="toy",
                         n_folds=2, time_limit=120, seed=0, text_columns=[])
print(expert.predictor.model_best, list(expert.leaderboard["model"]))
loaded = Expert.load(spec, expert.path, expert.classes)
print(loaded.outputs(frame.head(3)).shape)
"""


@pytest.mark.slow
def test_image_experts_at_best_add_realmlp_and_it_fits_where_torchvision_needs_the_workaround(tmp_path):
    """RealMLP (pytabkit) imports torchvision, whose PyPI wheel fails to import beside the CPU torch wheel: without
    the workaround AutoGluon would skip the model, saying only that it failed. A fresh interpreter, where nothing
    imported torchvision before."""
    import subprocess
    import sys
    assert "REALMLP" in hyperparameters_for("best", "image")
    assert all("REALMLP" not in hyperparameters_for(q, m) for q in QUALITY for m in ("text", "num", "cat", "joint"))
    assert "REALMLP" not in hyperparameters_for("toy", "image") and "REALMLP" not in hyperparameters_for("best")
    done = subprocess.run([sys.executable, "-c", REALMLP_IN_A_FRESH_PROCESS, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RealMLP_BAG_L1" in done.stdout.splitlines()[0] and done.stdout.splitlines()[1] == "(3, 2)"


@pytest.mark.parametrize("quality", ["toy", "best"])
def test_image_experts_fit_a_linear_model_before_the_presets_models(tmp_path, quality):
    """An image expert's first model is a linear one on the embedding (a linear probe, seconds to fit): at best
    RealMLP's bag used to spend the expert's whole share before AutoGluon reached a linear model, and at toy the
    preset's tiny boosted trees fit a pretrained encoder's features worse. Here a 10 s share, where at best the
    portfolio's configurations cannot all fit: the linear model is there, and on a linear boundary it beats the
    trees."""
    from multimodal.core import experts
    pytest.importorskip("autogluon.tabular")
    assert all("LR" not in hyperparameters_for(quality, m) for m in ("text", "num", "cat", "joint"))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    target = (x[:, :4].sum(axis=1) > 0).astype(int)
    missing = rng.random(400) < 0.1  # rows without a photo: the placeholder's one embedding, class 2
    x[missing], target[missing] = 3.0, 2
    frame = pd.DataFrame(x, columns=[f"photo_image_{i}" for i in range(16)])
    spec = experts.ExpertSpec("photo_image", "image", ["photo_image"])
    expert, oof = experts.Expert.fit(spec, frame, target, path=tmp_path / "e", quality=quality, n_folds=2,
                                     time_limit=10, seed=0, text_columns=[])
    scores = dict(zip(expert.leaderboard["model"], expert.leaderboard["score_val"]))
    linear = next(m for m in scores if m.startswith("LinearModel"))
    assert -scores[linear] < 0.5, scores  # its own out-of-fold log-loss: chance is ln 3 = 1.1
    trees = [v for m, v in scores.items() if m.startswith(("LightGBM", "CatBoost", "XGBoost", "RandomForest"))]
    assert all(scores[linear] > v for v in trees), scores  # on a linear boundary it beats the preset's trees
    assert oof.shape == (400, 3) and not np.isnan(oof).any()
    assert (oof.argmax(axis=1) == target).mean() > 0.8  # the boundary learnt: chance is about 0.5
