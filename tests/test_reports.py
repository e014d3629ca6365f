"""What a training job writes to output/data (multimodal.sagemaker.training.reports)."""
import json

import numpy as np
import pandas as pd

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
