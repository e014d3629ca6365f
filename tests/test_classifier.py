"""The estimator end to end on generated data (one model trained per session, see conftest)."""
import json

import numpy as np
import pandas as pd
import pytest

from multimodal import MultimodalClassifier
from multimodal.core.artifact import CONFIG_FILE
from multimodal.core.featurize import Featurizer
from multimodal.tools.synthetic import CLASSES, make_dataset, make_interaction_dataset

from conftest import FAST_HYPERPARAMETERS
from support import assert_learnt

pytestmark = pytest.mark.slow


def test_fusion_beats_every_single_expert(trained, test_df):
    scores = trained.evaluate(test_df)
    assert set(scores["experts"]) == {"text", "num", "cat", "photo_image", "joint"}
    per_modality = {name: s for name, s in scores["experts"].items() if name != "joint"}
    # the modalities are independent evidence here: fusing them must gain much over any one of them
    assert scores["accuracy"] >= max(s["accuracy"] for s in per_modality.values()) + 0.10, scores
    assert scores["log_loss"] < min(s["log_loss"] for s in per_modality.values())
    # and the stack is not worse than the joint expert, which sees every column at once, by more than the noise
    # of 160 test rows allows (binomial standard error of an accuracy near 0.75: 0.034; seeds are fixed, but the
    # experts' time limits make their fits depend on the machine's speed)
    assert scores["accuracy"] >= scores["experts"]["joint"]["accuracy"] - 0.035, scores


def test_the_fused_model_is_never_worse_than_its_best_expert_on_the_validation_rows(trained):
    """The fusion is the weighted ensemble of the experts unless 5-fold cross-validation over the out-of-fold
    rows finds the blend's loss lower by more than one standard error, and then the network's lower than that of
    the one chosen so far; the ensemble can put all its weight on one expert, so the fused loss on held-out rows
    is at most about the best expert's (a small margin: the weights were fitted on other rows)."""
    choice = trained.metrics_["fusion_choice"]
    cross_validation = choice["cross_validation"]
    assert cross_validation["folds"] == 5 and set(cross_validation["loss"]) == {"network", "ensemble", "blend"}
    versus = cross_validation["versus_reference"]

    def clearly_lower(v: dict) -> bool:
        return v["difference"] + v["standard_error"] < 0

    expected = "blend" if clearly_lower(versus["blend"]) else "ensemble"
    if clearly_lower(cross_validation["versus_blend"]["network"] if expected == "blend" else versus["network"]):
        expected = "network"
    assert choice["chosen"] == expected
    validation = trained.metrics_["validation"]
    best_expert = min(s["log_loss"] for s in validation["experts"].values())
    assert validation["log_loss"] <= best_expert + 0.02, validation


def test_evaluate_reports_each_metric(trained, test_df):
    scores = trained.evaluate(test_df)
    for block in [scores, *scores["experts"].values()]:
        assert {"accuracy", "balanced_accuracy", "log_loss"} <= set(block)
        assert 0 <= block["accuracy"] <= 1 and block["log_loss"] > 0


def test_probabilities_use_the_original_labels_and_input_index(trained, test_df):
    features = test_df.drop(columns="label").set_index(pd.Index(range(1000, 1000 + len(test_df))))
    proba = trained.predict_proba(features)
    assert list(proba.columns) == sorted(CLASSES)
    assert proba.index.equals(features.index)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    predicted = trained.predict(features)
    assert predicted.index.equals(features.index) and set(predicted) <= set(CLASSES)
    assert (predicted == proba.idxmax(axis=1)).all()


def test_predictions_follow_their_ids_after_shuffling(trained, test_df):
    features = test_df.drop(columns="label")
    reference = trained.predict_proba(features).set_index(features["ID"])
    shuffled = features.sample(frac=1.0, random_state=3)
    again = trained.predict_proba(shuffled).set_index(shuffled["ID"])
    pd.testing.assert_frame_equal(again.loc[reference.index], reference, atol=1e-6, rtol=0)


def test_rows_missing_modalities_predict_without_error(trained, test_df):
    rows = test_df.drop(columns="label").head(4).copy()
    rows.loc[rows.index[0], ["review_text", "colour_cat", "size_num", "weight_num", "photo_image"]] = ""
    rows.loc[rows.index[1], "photo_image"] = ""
    rows.loc[rows.index[2], ["review_text", "size_num", "weight_num"]] = ""
    rows.loc[rows.index[3], "colour_cat"] = "a colour never seen in training"
    proba = trained.predict_proba(rows)
    assert proba.notna().all().all() and len(proba) == 4


def test_empty_input_gives_empty_output(trained, test_df):
    proba = trained.predict_proba(test_df.drop(columns="label").head(0))
    assert proba.shape == (0, len(CLASSES))


def test_save_and_load_give_identical_probabilities(trained, saved_model_dir, test_df):
    loaded = MultimodalClassifier.load(saved_model_dir)
    features = test_df.drop(columns="label")
    np.testing.assert_allclose(loaded.predict_proba(features).to_numpy(),
                               trained.predict_proba(features).to_numpy(), atol=1e-6)
    assert loaded.classes_ == trained.classes_ and loaded.expert_names_ == trained.expert_names_


def test_a_served_model_loads_without_tensorflow_keras_or_matplotlib_and_predicts_the_same(
        trained, saved_model_dir, test_df, tmp_path):
    """What a server worker does: load in a fresh process, predict; the fusion runs in numpy there and in fit."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    features = test_df.drop(columns="label").head(40)
    features.to_csv(tmp_path / "features.csv", index=False)
    code = (
        "import sys, gc, numpy as np, pandas as pd; from multimodal import MultimodalClassifier; "
        f"m = MultimodalClassifier.load({str(saved_model_dir)!r}); assert gc.isenabled(); "
        f"f = pd.read_csv({str(tmp_path / 'features.csv')!r}, dtype=str, keep_default_na=False); "
        f"np.save({str(tmp_path / 'proba.npy')!r}, m.predict_proba(f).to_numpy()); "
        "print('imported:', *(n for n in ('tensorflow', 'keras', 'matplotlib', 'torchvision') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "imported:"  # none of them
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), trained.predict_proba(features).to_numpy(),
                               atol=1e-6, rtol=0)


def test_artifact_layout_and_config(saved_model_dir, trained):
    config = json.loads((saved_model_dir / CONFIG_FILE).read_text())
    assert [c["name"] for c in config["schema"]["columns"]] == [
        "review_text", "colour_cat", "size_num", "weight_num", "photo_image"]
    assert config["schema"]["header"][0] == "ID" and config["classes"] == sorted(CLASSES)
    assert {e["name"] for e in config["experts"]} == {"text", "num", "cat", "photo_image", "joint"}
    for expert in config["experts"]:
        assert (saved_model_dir / expert["path"]).is_dir()
        if expert["name"] == "joint":  # no row lacks every column: nothing is 'insufficient' for it
            assert expert["classes"] == list(range(len(CLASSES)))
        else:  # the 'insufficient information' class was learned
            assert expert["classes"][-1] == len(CLASSES)
    fusion_files = {"network": ["fusion.keras"], "ensemble": ["ensemble.json"],
                    "blend": ["blend.json", "ensemble", "fusion.keras"]}[config["metrics"]["fusion_choice"]["chosen"]]
    assert sorted(f.name for f in (saved_model_dir / "wholistic").iterdir()) == fusion_files
    assert config["hyperparameters"]["quality"] == "toy"
    assert config["reduced_embeddings"] == []  # 360 rows: the image expert reads the full embedding (auto)
    assert {"autogluon.tabular", "keras", "torch", "multimodal"} <= set(config["versions"])
    assert config["metrics"]["validation"]["accuracy"] > 0.5
    assert not list(saved_model_dir.rglob("*.pkl.oof*"))
    size_mb = sum(f.stat().st_size for f in saved_model_dir.rglob("*") if f.is_file()) / 1e6
    assert size_mb < 100


def test_load_refuses_an_incompatible_artifact_version(saved_model_dir, tmp_path):
    import shutil
    copy = tmp_path / "model"
    shutil.copytree(saved_model_dir, copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (copy / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 99 cannot be loaded.*retrain"):
        MultimodalClassifier.load(copy)


def test_load_of_a_directory_without_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_config.json not found"):
        MultimodalClassifier.load(tmp_path)


def test_fusion_is_trained_on_out_of_fold_probabilities(monkeypatch):
    """The fusion's training inputs must be out-of-fold: less confident than the experts' in-sample output."""
    from multimodal.core import fusion as fusion_module
    from multimodal.core.schema import prepare_features
    calls = []
    original = fusion_module.FusionNetwork.train.__func__

    def spy(cls, x, y, n_classes, **kwargs):
        calls.append((x, y))
        return original(cls, x, y, n_classes, **kwargs)

    monkeypatch.setattr(fusion_module.FusionNetwork, "train", classmethod(spy))
    data = make_dataset(240, seed=21, with_images=False)
    # with a validation set every training row trains the fusion, in order
    model = MultimodalClassifier(quality="toy", n_folds=3, n_mins=3, use_leftover_time=False).fit(
        data, make_dataset(80, seed=22, with_images=False))
    in_sample = model._fusion_inputs(prepare_features(data, model.schema_), {})
    # the final network's fit (on every training row) among those of the cross-validated choice (4/5 of them)
    x, y = max(calls, key=lambda call: len(call[0]))
    assert x.shape == in_sample.shape
    assert np.abs(x - in_sample).mean() > 0.01

    def loss(p):
        start, total = 0, 0.0
        for expert in model.experts_:
            block = p[:, start:start + len(expert.classes)]
            total += -np.log(np.clip(block[np.arange(len(y)), y], 1e-9, 1)).mean()
            start += len(expert.classes)
        return total
    assert loss(x) > loss(in_sample)  # in-sample probabilities flatter the experts; OOF ones do not


def test_a_modality_missing_in_a_single_row_still_trains():
    """One 'insufficient information' row is too rare to bag: AutoGluon duplicates it, training must cope."""
    data = make_dataset(120, seed=5, with_images=False, missing_rate=0.0)
    data.loc[3, "review_text"] = ""
    model = MultimodalClassifier(quality="toy", n_folds=3, n_secs=60).fit(data)
    text = next(e for e in model.experts_ if e.name == "text")
    assert text.classes == [0, 1, 2, 3, 4]
    assert model.predict_proba(data.drop(columns="label").head(5)).notna().all().all()


def test_fitted_attributes_end_with_an_underscore_and_show_in_repr(trained):
    assert trained.classes_ == sorted(CLASSES)
    assert trained.expert_names_ == ["text", "num", "cat", "photo_image", "joint"]
    assert [c.name for c in trained.schema_.columns] == ["review_text", "colour_cat", "size_num", "weight_num",
                                                         "photo_image"]
    assert set(trained.metrics_) >= {"train", "validation", "fusion_curve"} and set(trained.leaderboards_) == {
        "text", "num", "cat", "photo_image", "joint"}
    assert repr(trained).startswith("MultimodalClassifier(n_mins=6, ")
    assert repr(trained).endswith("  # fitted: 4 classes, experts text, num, cat, photo_image, joint")


def test_the_missing_indicator_reaches_the_numeric_expert_and_survives_save_load(trained, saved_model_dir):
    loaded = MultimodalClassifier.load(saved_model_dir)
    assert trained.missing_indicators_ == loaded.missing_indicators_ == ["size_num", "weight_num"]
    for model in (trained, loaded):
        features = {e.name: e.predictor.features() for e in model.experts_}
        assert {"size_num__missing", "weight_num__missing"} <= set(features["num"])
        assert {"size_num__missing", "weight_num__missing"} <= set(features["joint"])


def test_reduced_image_embeddings_reach_every_expert_and_survive_save_load(tmp_path, test_df):
    model = MultimodalClassifier(**{**FAST_HYPERPARAMETERS, "n_mins": 0, "n_secs": 45, "n_folds": 2},
                                 reduce_image_embeddings="true", image_embedding_dims=16).fit(make_dataset(150, seed=61))
    assert model.views_.reduced == {"photo_image"}
    features = {e.name: e.predictor.features() for e in model.experts_}
    components = [f"photo_image__pc{i}" for i in range(16)]
    assert set(features["photo_image"]) <= set(components) and len(features["photo_image"]) >= 12
    # joint_embedding_dims (32) is more than the 16 shared components: the joint expert reads all of them
    assert {f for f in features["joint"] if f.startswith("photo_image")} <= set(components)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / CONFIG_FILE).read_text())["reduced_embeddings"] == ["photo_image"]
    rows = test_df.drop(columns="label").head(40)
    loaded = MultimodalClassifier.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    # learnt from 16 components per image: a 45 s fit of 150 rows on 2 busy cores is weak, so the bar is the
    # majority class's share + 0.1 over all 160 test rows (about 2 standard errors), not a fixed accuracy
    assert_learnt(model.predict(test_df.drop(columns="label")), test_df["label"], margin=0.1)


def test_a_model_saved_before_shared_image_reductions_loads_and_predicts_as_it_did(trained, saved_model_dir,
                                                                                   tmp_path, test_df):
    """A version-4 model's image expert read the full embedding, and its config has neither "reduced_embeddings"
    nor the hyperparameters that decide it: loading it must not reduce what its expert never saw reduced."""
    import shutil
    features = next(e for e in trained.experts_ if e.name == "photo_image").predictor.features()
    # efficientnet_lite0's own dimensions (AutoGluon drops those that are constant over the training rows)
    assert len(features) > 1000 and all(f.startswith("photo_image__") and f[13:].isdigit() for f in features)
    shutil.copytree(saved_model_dir, tmp_path / "m")
    config_path = tmp_path / "m" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    del config["reduced_embeddings"]
    del config["hyperparameters"]["image_embedding_dims"], config["hyperparameters"]["reduce_image_embeddings"]
    config["format_version"] = 4
    config_path.write_text(json.dumps(config))
    old = MultimodalClassifier.load(tmp_path / "m")
    assert old.reduce_image_embeddings == "false" and old.views_.reduced == set()
    rows = test_df.drop(columns="label").head(30)
    pd.testing.assert_frame_equal(old.predict_proba(rows), MultimodalClassifier.load(saved_model_dir).predict_proba(rows))


@pytest.fixture(scope="module")
def interaction():
    return make_interaction_dataset(500, seed=3), make_interaction_dataset(300, seed=4)


def test_the_joint_expert_learns_an_interaction_the_per_modality_experts_cannot(interaction):
    train, test = interaction
    settings = {"quality": "toy", "n_mins": 0, "n_secs": 45, "n_folds": 3, "n_epochs": 100, "patience": 10}
    scores = MultimodalClassifier(**settings).fit(train).evaluate(test)
    experts = {name: block["accuracy"] for name, block in scores["experts"].items()}
    assert experts["joint"] >= 0.85, experts
    assert max(experts[n] for n in ("text", "num", "cat")) <= 0.65, experts
    assert scores["accuracy"] >= 0.85, (scores["accuracy"], experts)
    without = MultimodalClassifier(**settings, joint_expert=False).fit(train).evaluate(test)
    assert "joint" not in without["experts"]
    assert without["accuracy"] <= scores["accuracy"] - 0.15, (without["accuracy"], scores["accuracy"])


def test_text_model_minilm_feeds_sentence_embeddings_to_the_experts_and_survives_save_load(tmp_path):
    train, test = make_dataset(160, seed=41), make_dataset(60, seed=42)
    model = MultimodalClassifier(quality="toy", image_model="efficientnet_lite0", text_model="minilm", n_mins=0,
                                 n_secs=60, n_folds=2, n_epochs=30, joint_embedding_dims=8).fit(train)
    features = {e.name: e.predictor.features() for e in model.experts_}
    text_columns = model.schema_.names("text")
    assert all(f"{text_columns[0]}__{i}" in features["text"] for i in (0, 383))  # the 384-d embedding
    assert not set(text_columns) & set(features["text"])  # no raw text (no n-grams)
    assert f"{text_columns[0]}__pc7" in features["joint"] and f"{text_columns[0]}__pc8" not in features["joint"]
    model.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    assert config["hyperparameters"]["text_model"] == "minilm"
    assert set(config["reducers"]) == set(text_columns) | set(model.schema_.names("image"))
    loaded = MultimodalClassifier.load(tmp_path / "model")
    features = test.drop(columns="label")
    np.testing.assert_allclose(loaded.predict_proba(features).to_numpy(), model.predict_proba(features).to_numpy(),
                               atol=1e-6)


def test_a_model_whose_fusion_uses_missing_fractions_keeps_using_them_after_load(monkeypatch, tmp_path):
    import multimodal.core.estimator as classifier_module
    monkeypatch.setattr(classifier_module, "FUSION_MISSING_FRACTIONS", True)
    train, test = make_dataset(140, seed=51), make_dataset(40, seed=52)
    model = MultimodalClassifier(quality="toy", image_model="efficientnet_lite0", n_mins=0, n_secs=40, n_folds=2,
                                 n_epochs=20, joint_expert=False).fit(train)
    n_probabilities = sum(len(e.classes) for e in model.experts_)
    # the fusion network sees the probabilities and one missing fraction per expert
    inputs = model._fusion_inputs(*_prepared(model, test.drop(columns="label")))
    assert inputs.shape[1] == n_probabilities + len(model.experts_)
    model.save(tmp_path / "model")
    monkeypatch.setattr(classifier_module, "FUSION_MISSING_FRACTIONS", False)
    loaded = MultimodalClassifier.load(tmp_path / "model")
    assert loaded.fusion_missing_inputs_
    features = test.drop(columns="label")
    np.testing.assert_allclose(loaded.predict_proba(features).to_numpy(), model.predict_proba(features).to_numpy(),
                               atol=1e-6)


def test_a_weighted_ensemble_fusion_runs_only_the_experts_it_weights(saved_model_dir, test_df, tmp_path,
                                                                       monkeypatch):
    """When the fusion is the weighted ensemble and it gives an expert no weight, prediction neither runs that
    expert nor embeds the image columns only it needs: the same probabilities, for less time."""
    from multimodal.core.experts import Expert
    from multimodal.core.selection import WeightedEnsemble
    from multimodal.core.targets import real_class_probabilities
    model = MultimodalClassifier.load(saved_model_dir)
    names = model.expert_names_
    model.fusion_ = WeightedEnsemble([1.0 if n == "text" else 0.0 for n in names],
                                     [e.classes for e in model.experts_], len(model.classes_))
    features = test_df.drop(columns="label").head(40)
    text_expert = model.experts_[names.index("text")]
    expected = real_class_probabilities(text_expert.outputs(model.views_.frame(
        text_expert.spec, *_prepared(model, features))), text_expert.classes, len(model.classes_))
    saved = tmp_path / "ensemble-model"
    model.save(saved)
    reloaded = MultimodalClassifier.load(saved)
    assert [f.name for f in (saved / "wholistic").iterdir()] == ["ensemble.json"]

    def refuse(self, frame, placeholder=None):
        raise AssertionError(f"expert {self.name} has weight 0 and must not run")
    original = Expert.outputs
    monkeypatch.setattr(Expert, "outputs", lambda self, frame, placeholder=None: original(self, frame, placeholder)
                        if self.name == "text" else refuse(self, frame))
    monkeypatch.setattr(Featurizer, "embedder", lambda self, modality: pytest.fail(f"{modality} was embedded"))
    proba = reloaded.predict_proba(features)
    np.testing.assert_allclose(proba.to_numpy(), expected, rtol=1e-5)
    assert list(reloaded.predict(features)) == list(np.asarray(model.classes_, dtype=object)[expected.argmax(1)])


def _prepared(model, features):
    from multimodal.core.schema import prepare_features
    prepared = prepare_features(features, model.schema_)
    return prepared, model._embed(prepared)


def test_rows_without_an_image_share_one_output_of_the_image_expert(trained, test_df, monkeypatch):
    """The image expert sees the same placeholder embedding in every row without an image: its output there is
    computed once and reused, and the probabilities are those of running every row through it."""
    import multimodal.core.estimator as estimator_module
    rows = test_df.drop(columns=["label"]).copy()
    column = next(c for c in rows.columns if c.endswith("_image"))
    photo = next(v for v in rows[column] if isinstance(v, str) and v)
    rows[column] = [v if isinstance(v, str) and v else photo for v in rows[column]]
    rows.loc[rows.index[1::3], column] = None  # the first row without an image is not the first row
    expert = next(e for e in trained.experts_ if e.spec.modality == "image")
    expert._placeholder_output = None  # computed anew from this request
    with monkeypatch.context() as patch:
        patch.setattr(estimator_module, "placeholder_rows", lambda spec, features: None)
        every_row = trained.predict_proba(rows)
    seen = []
    original = expert.predictor.predict_proba
    monkeypatch.setattr(expert.predictor, "predict_proba", lambda frame, **kw: seen.append(len(frame)) or original(
        frame, **kw))
    shared = trained.predict_proba(rows)
    assert np.isfinite(shared.to_numpy()).all()
    np.testing.assert_allclose(shared.to_numpy(), every_row.to_numpy(), atol=1e-6)
    missing = int(rows[column].isna().sum())
    assert missing == len(rows[1::3]) and sum(seen) == len(rows) - missing + 1
