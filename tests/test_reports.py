"""What a training job writes to output/data (multimodal.sagemaker.training.reports)."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from multimodal.core import scores
from multimodal.sagemaker.training import reports

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_from_labels_as_the_user_writes_them():
    matrix = reports.confusion_matrix([1, 1, 2, " 3", "x"], ["1", 2, 2, 3, 1], classes=[1, 2, 3])
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # "x" is no class: left out


def test_metrics_json_is_strict_json(tmp_path):
    path = reports.write_metrics_json({"a": np.float32(0.5), "b": float("nan"), "c": [np.int64(3)]}, tmp_path)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": None, "c": [3]}


def test_leaderboards_get_safe_distinct_file_names(tmp_path):
    board = pd.DataFrame({"model": ["LightGBM"], "score_val": [-0.3]})
    written = reports.write_leaderboards({"../photo image": board, "_photo_image": board, "text": None}, tmp_path)
    assert [p.name for p in written] == ["leaderboard__photo_image.csv", "leaderboard__photo_image_.csv"]
    assert all(p.parent == tmp_path and p.is_file() for p in written)  # no way out of output/data


def test_plots_are_png_files(tmp_path):
    classes = [f"class {i}" for i in range(40)]  # too many to annotate: still drawn
    matrix = np.eye(40, dtype=int) * 3
    reports.plot_confusion_matrix(matrix, classes, tmp_path / "cm.png", title="fused model")
    reports.plot_training_curve({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8],
                                 "val_accuracy": [0.4, 0.7], "best_epoch": 2}, tmp_path / "curve.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG and (tmp_path / "curve.png").read_bytes()[:8] == PNG


# ---------------------------------------------------------------------------------------------- write_reports

def assert_png(path, min_bytes=10_000):
    from matplotlib.image import imread
    assert path.is_file() and path.read_bytes()[:8] == PNG, path
    assert path.stat().st_size > min_bytes, path  # something was drawn
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # not a blank canvas


def job_paths(tmp_path):
    from multimodal.sagemaker.opt_ml import Paths
    paths = Paths(tmp_path)
    paths.output_data_dir.mkdir(parents=True)
    return paths


def write(model, tmp_path):
    from multimodal.sagemaker.training.reports import write_reports
    from multimodal.sagemaker.training.steps import Stopwatch
    paths = job_paths(tmp_path)
    write_reports(model, paths.output_data_dir, {"train": {"rows": 240}}, Stopwatch(), 60, 2_000_000)
    return paths.output_data_dir


def regression_model(rows=300, seed=0):
    rng = np.random.default_rng(seed)
    actual = rng.normal(50.0, 10.0, rows)
    predicted = actual + rng.normal(0.0, 3.0, rows)
    block = {"rmse": 3.0, "mae": 2.4, "r2": 0.91, "rows": rows,
             "experts": {"text": {"rmse": 6.0, "mae": 4.8, "r2": 0.64, "rows": rows}}}
    return SimpleNamespace(
        problem_type_="regression", expert_names_=["text"], leaderboards_={},
        metrics_={"train": dict(block), "validation": block, "validation_source": "validation data",
                  "rows": {"train": 240, "validation": rows},
                  "target": {"mean": 50.0, "std": 10.0, "min": 20.0, "max": 80.0},
                  "fusion_curve": {"loss": [9.0, 4.0, 3.0], "val_loss": [10.0, 5.0, 4.0], "best_epoch": 3,
                                   "loss_name": "mean squared error"}},
        validation_predictions_=pd.DataFrame({"actual": actual, "predicted": predicted}))


def test_regression_reports_plot_predictions_and_residuals_and_no_confusion_matrix(tmp_path):
    out = write(regression_model(), tmp_path)
    assert not (out / reports.CONFUSION_MATRIX_FILE).exists()
    assert {p.name for p in out.iterdir()} == {reports.METRICS_FILE, reports.PREDICTED_VS_ACTUAL_FILE,
                                               reports.RESIDUALS_FILE, reports.TRAINING_CURVE_FILE}
    for name in (reports.PREDICTED_VS_ACTUAL_FILE, reports.RESIDUALS_FILE, reports.TRAINING_CURVE_FILE):
        assert_png(out / name)
    metrics = json.loads((out / reports.METRICS_FILE).read_text())
    assert metrics["job"]["problem_type"] == "regression" and "classes" not in metrics["job"]
    assert metrics["job"]["experts"] == ["text"] and metrics["job"]["time_budget_seconds"] == 60
    assert metrics["target"] == {"mean": 50.0, "std": 10.0, "min": 20.0, "max": 80.0}
    assert metrics["validation"]["rmse"] == 3.0 and "confusion_matrix" not in metrics


def test_regression_reports_without_validation_predictions_still_write_metrics(tmp_path):
    model = regression_model()
    model.validation_predictions_ = pd.DataFrame({"actual": [], "predicted": []})
    out = write(model, tmp_path)
    names = {p.name for p in out.iterdir()}
    assert reports.METRICS_FILE in names and reports.PREDICTED_VS_ACTUAL_FILE not in names
    assert reports.CONFUSION_MATRIX_FILE not in names


def test_classification_reports_keep_the_confusion_matrix_and_classes(tmp_path):
    block = {"accuracy": 0.75, "balanced_accuracy": 0.75, "log_loss": 0.5, "rows": 8,
             "confusion_matrix": [[3, 1], [1, 3]]}
    model = SimpleNamespace(problem_type_="binary", classes_=["no", "yes"], expert_names_=["text"],
                            leaderboards_={"text": pd.DataFrame({"model": ["LightGBM"], "score_val": [-0.3]})},
                            metrics_={"train": block, "validation": block, "validation_source": "validation data",
                                      "fusion_curve": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                                                       "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7],
                                                       "best_epoch": 2}})
    out = write(model, tmp_path)
    assert {p.name for p in out.iterdir()} == {reports.METRICS_FILE, reports.CONFUSION_MATRIX_FILE,
                                               reports.TRAINING_CURVE_FILE, "leaderboard_text.csv"}
    assert_png(out / reports.CONFUSION_MATRIX_FILE)
    metrics = json.loads((out / reports.METRICS_FILE).read_text())
    assert metrics["job"]["classes"] == ["no", "yes"] and metrics["job"]["problem_type"] == "binary"
    assert metrics["confusion_matrix"]["rows_true_columns_predicted"] == [[3, 1], [1, 3]]
    assert "target" not in metrics


def test_large_regression_sets_are_sampled_for_the_scatter(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    actual = rng.normal(0.0, 1.0, 20_000)
    predicted = actual + rng.normal(0.0, 0.5, 20_000)
    predicted[:5] = np.nan  # rows without a finite prediction are left out
    titles, sizes = [], []
    plt = reports.pyplot()
    real_scatter, real_title = plt.Axes.scatter, plt.Axes.set_title
    monkeypatch.setattr(plt.Axes, "scatter",
                        lambda ax, x, y, **kw: sizes.append(len(x)) or real_scatter(ax, x, y, **kw))
    monkeypatch.setattr(plt.Axes, "set_title", lambda ax, text, **kw: titles.append(text) or real_title(ax, text, **kw))
    reports.plot_predicted_vs_actual(actual, predicted, tmp_path / "pva.png", title="fused model")
    assert sizes == [reports.MAX_SCATTER_POINTS]
    assert "19995 rows" in titles[0] and f"{reports.MAX_SCATTER_POINTS} of them drawn" in titles[0]
    keep = np.isfinite(predicted)
    expected = scores.regression_scores(actual[keep], predicted[keep])  # of every row, not of the sample
    assert f"RMSE {expected['rmse']:.4g}, R² {expected['r2']:.3f}" in titles[0]
    assert_png(tmp_path / "pva.png")
    reports.plot_residuals(actual, predicted, tmp_path / "res.png", title="fused model")
    assert_png(tmp_path / "res.png")
    small = reports.sample_indices(10)
    assert small.tolist() == list(range(10))
    assert reports.sample_indices(100, 10).tolist() == reports.sample_indices(100, 10).tolist()  # reproducible


def test_a_regression_training_curve_has_one_panel_labelled_with_its_loss(tmp_path, monkeypatch):
    labels = []
    plt = reports.pyplot()
    real = plt.Axes.set_ylabel
    monkeypatch.setattr(plt.Axes, "set_ylabel", lambda ax, text, **kw: labels.append(text) or real(ax, text, **kw))
    reports.plot_training_curve({"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "best_epoch": 2,
                                 "loss_name": "Huber loss"}, tmp_path / "huber.png")
    reports.plot_training_curve({"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "best_epoch": 2}, tmp_path / "plain.png")
    reports.plot_training_curve({"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "loss_name": "Huber"}, tmp_path / "h.png")
    reports.plot_training_curve({"loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "loss_name": "mean squared error"},
                                tmp_path / "mse.png")
    reports.plot_training_curve({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8],
                                 "val_accuracy": [0.4, 0.7], "best_epoch": 2}, tmp_path / "classes.png")
    reports.plot_training_curve({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8],
                                 "loss_name": "cross-entropy"}, tmp_path / "named.png")
    assert labels == ["Huber loss", "loss", "Huber loss", "mean squared error", "cross-entropy loss", "accuracy",
                      "cross-entropy loss", "accuracy"]
    for name in ("huber.png", "plain.png", "h.png", "mse.png", "classes.png", "named.png"):
        assert_png(tmp_path / name, min_bytes=5_000)
