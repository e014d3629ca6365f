"""The training entrypoint `multimodal-train`, run as SageMaker runs it: a subprocess over an /opt/ml layout.

Error paths run without training (each fails in a second or two); the tests marked slow train real, tiny models.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from multimodal import MultimodalClassifier, MultimodalEstimator
from multimodal.core.artifact import CONFIG_FILE
from multimodal.sagemaker.training.metrics import metric_definitions
from multimodal.tools.synthetic import make_dataset, make_regression_dataset

ENTRYPOINT = Path(sys.executable).parent / "multimodal-train"  # the console script the images put on PATH
FAST = {"quality": "toy", "n_folds": "2", "n_hours": "0", "n_mins": "0", "n_secs": "30", "n_epochs": "40"}
# Documented in multimodal/sagemaker/training/job.py: a job takes its time budget plus at most this much
# (start-up, reading, the experts' minimum time when the budget is nearly spent, saving, reports).
OVERHEAD_ALLOWANCE_S = 45


@dataclass
class Job:
    root: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def failure(self) -> str | None:
        path = self.root / "output" / "failure"
        return path.read_text(encoding="utf-8") if path.exists() else None

    @property
    def model_entries(self) -> list[str]:
        return sorted(p.name for p in (self.root / "model").iterdir()) if (self.root / "model").exists() else []

    @property
    def outputs(self) -> Path:
        return self.root / "output" / "data"


def layout(root: Path, *, hyperparameters: dict | str | None = None, channels: dict | None = None,
           input_modes: dict | None = None, resource: dict | None = None) -> Path:
    """An /opt/ml tree as SageMaker lays it out: config JSONs and one directory per File-mode channel."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "model").mkdir()
    (root / "output").mkdir()
    if hyperparameters is not None:
        text = hyperparameters if isinstance(hyperparameters, str) else json.dumps(hyperparameters)
        (config / "hyperparameters.json").write_text(text)
    modes = dict(input_modes or {})
    for name, files in (channels or {}).items():
        modes.setdefault(name, "File")
        if modes[name] == "Pipe":
            continue
        directory = root / "input" / "data" / name
        directory.mkdir(parents=True)
        for relative, content in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_bytes(content if isinstance(content, bytes) else content.encode())
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"ContentType": "text/csv", "TrainingInputMode": mode, "S3DistributionType": "FullyReplicated",
               "RecordWrapperType": "None"} for name, mode in modes.items()}))
    (config / "resourceconfig.json").write_text(json.dumps(
        resource or {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
    return root


def environment(root: Path) -> dict:
    env = dict(os.environ, MULTIMODAL_ML_ROOT=str(root), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MPLCONFIGDIR", None)  # the entrypoint must cope without it
    return env


def run_job(root: Path, timeout: float = 300) -> Job:
    started = time.monotonic()
    done = subprocess.run([str(ENTRYPOINT)], env=environment(root), capture_output=True, text=True,
                          timeout=timeout)
    return Job(root, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


@pytest.fixture(scope="module")
def small():
    return make_dataset(60, seed=5, with_images=False)


def assert_failed_cleanly(job: Job, *fragments: str) -> str:
    assert job.returncode != 0, job.stderr[-3000:]
    reason = job.failure
    assert reason, "output/failure was not written"
    head = reason[:1024]
    for fragment in fragments:
        assert fragment in head, (fragment, reason)
    assert job.model_entries == [], f"model/ must be empty after a failure: {job.model_entries}"
    assert not (job.outputs / "metrics.json").exists()
    assert "Traceback (most recent call last)" in job.stderr  # the details go to the log
    assert not job.stdout.strip(), "no metric lines for a failed job"
    return reason


# ---------------------------------------------------------------------------------------------- hyperparameters

@pytest.mark.parametrize("hyperparameters, fragments", [
    ({"n_mins": "five"}, ["n_mins='five' must be an integer"]),
    ({"n_epochs": "2.5"}, ["n_epochs='2.5' must be an integer"]),
    ({"learning_rate": "fast"}, ["learning_rate='fast' must be a number"]),
    ({"n_epochs": "0"}, ["n_epochs='0' is out of range", "between 1 and 1000"]),
    ({"n_hours": "100"}, ["n_hours='100' is out of range"]),
    ({"missing_threshold": "1.5"}, ["missing_threshold='1.5' is out of range"]),
    ({"quality": "ultra"}, ["quality='ultra' is not one of toy, very_light, light, default, best"]),
    ({"n_minutes": "3"}, ["unknown hyperparameter 'n_minutes'"]),
    ({"quality": json.dumps("tooy")}, ["quality='tooy' is not one of toy, very_light"]),  # SDK-quoted, still wrong
    ({"n_mins": json.dumps("five")}, ["n_mins='five' must be an integer"]),
    ({"nmins": "3"}, ["did you mean n_mins?"]),
    ({"n_hours": "0", "n_mins": "0", "n_secs": "0"}, ["time budget", "n_mins=5"]),
    ('["n_mins", "5"]', ["must be a JSON object"]),
])
def test_each_hyperparameter_error_fails_the_job_naming_it(tmp_path, small, hyperparameters, fragments):
    root = layout(tmp_path, hyperparameters=hyperparameters, channels={"train": {"train.csv": to_csv(small)}})
    reason = assert_failed_cleanly(run_job(root), "Invalid hyperparameters", *fragments)
    assert len(reason) <= 1024


def sdk_hyperparameters(values: dict) -> dict:
    """hyperparameters.json as the SageMaker Python SDK writes it for a script-mode estimator: every value
    json.dumps-ed (strings arrive quoted, numbers do not), plus the SDK's own sagemaker_* keys."""
    sdk = {"sagemaker_program": "train.py", "sagemaker_submit_directory": "s3://bucket/job/source/sourcedir.tar.gz",
           "sagemaker_container_log_level": 20, "sagemaker_region": "us-east-1"}
    return {str(k): json.dumps(v) for k, v in {**values, **sdk}.items()}


def test_hyperparameters_written_json_quoted_by_the_sdk_are_unwrapped(tmp_path, caplog):
    from multimodal.core.hyperparameters import resolve
    from multimodal.sagemaker import opt_ml
    written = sdk_hyperparameters({"quality": "toy", "image_model": "efficientnet_lite0", "n_mins": 5,
                                   "learning_rate": 0.01, "missing_threshold": 1.0})
    assert written["quality"] == '"toy"' and written["n_mins"] == "5"  # what the file holds
    root = layout(tmp_path, hyperparameters=written)
    with caplog.at_level("INFO", logger="multimodal.sagemaker.opt_ml"):
        raw = opt_ml.read_hyperparameters(opt_ml.Paths(root))
    values = resolve(raw)
    assert (values["quality"], values["image_model"], values["n_mins"], values["learning_rate"]) == (
        "toy", "efficientnet_lite0", 5, 0.01)
    unwrapped = [r.getMessage() for r in caplog.records if "JSON-quoted" in r.getMessage()]
    assert len(unwrapped) == 1 and "quality, image_model" in unwrapped[0]  # logged once, naming them
    assert "sagemaker_program" not in unwrapped[0] and "n_mins" not in unwrapped[0]


@pytest.mark.parametrize("value, expected", [
    ('"toy"', "toy"), (' "toy" ', "toy"), ("toy", "toy"), ("5", "5"), ('"5"', "5"), ('"to', '"to'),
    ('"a" "b"', '"a" "b"'), ('"\\"toy\\""', '"toy"'),  # one level of quoting only
])
def test_only_whole_json_string_literals_are_unwrapped(value, expected):
    from multimodal.sagemaker.opt_ml import unwrap_json_quoted
    assert unwrap_json_quoted({"quality": value})[0] == {"quality": expected}


def test_invalid_hyperparameters_json_is_reported(tmp_path, small):
    root = layout(tmp_path, hyperparameters='{"n_mins": "5",', channels={"train": {"train.csv": to_csv(small)}})
    assert_failed_cleanly(run_job(root), "hyperparameters.json is not valid JSON")


def test_hyperparameter_values_are_never_evaluated(tmp_path, small):
    marker = tmp_path / "evaluated"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch() or 5"
    root = layout(tmp_path / "ml", hyperparameters={"n_mins": payload},
                  channels={"train": {"train.csv": to_csv(small)}})
    assert_failed_cleanly(run_job(root), "n_mins=", "must be an integer")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- bad data

def _bad_number(frame: pd.DataFrame) -> dict:
    frame = frame.copy()
    frame.loc[7, "size_num"] = "twelve"
    return {"train.csv": to_csv(frame)}


def _mismatched(frame: pd.DataFrame) -> dict:
    return {"a.csv": to_csv(frame.head(30)), "b.csv.gz": gzipped(to_csv(frame.tail(30).drop(columns="weight_num")))}


def _duplicate_column(frame: pd.DataFrame) -> dict:
    text = to_csv(frame)
    header, rest = text.split("\n", 1)
    return {"train.csv": header.replace("weight_num", "size_num") + "\n" + rest}


def _ragged(frame: pd.DataFrame) -> dict:
    lines = to_csv(frame).split("\n")
    lines[4] += ",extra"
    return {"train.csv": "\n".join(lines)}


@pytest.mark.parametrize("make_files, fragments", [
    (lambda f: {"train.csv": to_csv(f.rename(columns={"colour_cat": "colour"}))},
     ["'colour'", "no recognised suffix", "_text, _num, _cat or _image"]),
    (lambda f: {"train.csv": to_csv(f.drop(columns="label"))}, ["no 'label' column"]),
    (_bad_number, ["'size_num'", "row 8", "'twelve' is not a number"]),
    (_mismatched, ["'a.csv'", "'b.csv.gz'", "different headers", "'weight_num'"]),
    (_duplicate_column, ["'size_num' more than once"]),
    (_ragged, ["line 5", "7 field(s) where the header has 6", "double quotes"]),
    (lambda f: {"train.csv": to_csv(f) + '"r-x,unterminated quote,red,1,2,alpha\n'},
     ["malformed CSV", "unexpected end of data", "double quotes"]),
    (lambda f: {"train.csv": ""}, ["'train.csv' is empty", "header row"]),
    (lambda f: {"train.csv": to_csv(f.head(0))}, ["no data rows"]),
    (lambda f: {"train.csv": to_csv(f.assign(label="alpha"))}, ["at least 2 classes"]),
    (lambda f: {"train.parquet": b"PAR1", "_SUCCESS": b""}, ["no .csv or .csv.gz file", "train.parquet"]),
    (lambda f: {"train.csv.gz": gzipped(to_csv(f))[:200]}, ["gzip data is corrupt or truncated"]),
    (lambda f: {"train.csv": to_csv(f).encode("utf-16")}, ["not UTF-8"]),
])
def test_bad_training_data_fails_fast_with_a_reason_and_no_model(tmp_path, small, make_files, fragments):
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": make_files(small)})
    # A model left over from an earlier run must not survive a failed one either.
    (root / "model" / CONFIG_FILE).write_text("{}")
    (root / "model" / "wholistic").mkdir()
    job = run_job(root)
    assert_failed_cleanly(job, "Invalid input data", *fragments)
    assert "fitting on" not in job.stderr, "the data error must be found before any expert trains"
    assert job.seconds < 60


def test_missing_train_channel_is_explained(tmp_path, small):
    root = layout(tmp_path, hyperparameters=FAST, channels={"validation": {"v.csv": to_csv(small)}})
    assert_failed_cleanly(run_job(root), "no 'train' channel", "S3 prefix")


def test_recordio_pipe_channels_are_refused(tmp_path, small):
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": {"t.csv": to_csv(small)}})
    config = root / "input" / "config" / "inputdataconfig.json"
    config.write_text(json.dumps({"train": {"TrainingInputMode": "File", "RecordWrapperType": "RecordIO"}}))
    assert_failed_cleanly(run_job(root), "RecordWrapperType 'RecordIO' is not supported")


def test_a_failure_while_saving_leaves_model_dir_empty(tmp_path, small, monkeypatch):
    """Disk full half-way through writing the model: nothing in model/ may pass for a model."""
    from multimodal.sagemaker.training import job as training

    def fake_fit(self, train, validation=None, images=None, checkpoints=None):
        self.problem_type_, self.classes_, self.metrics_, self.leaderboards_ = "binary", ["a", "b"], {}, {}
        return self

    def partial_save(self, path):
        path = Path(path)
        (path / "modality" / "text").mkdir(parents=True)
        (path / "modality" / "text" / "predictor.pkl").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MultimodalEstimator, "fit", fake_fit)
    monkeypatch.setattr(MultimodalEstimator, "save", partial_save)
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": {"t.csv": to_csv(small)}})
    monkeypatch.setenv("MULTIMODAL_ML_ROOT", str(root))
    assert training.main([]) == 1
    assert sorted((root / "model").iterdir()) == []
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("No space left on device") and "VolumeSizeInGB" in reason


def test_unexpected_errors_give_type_message_and_pointer_to_the_log(tmp_path, small, monkeypatch):
    from multimodal.sagemaker.training import job as training

    def broken_fit(self, train, validation=None, images=None, checkpoints=None):
        raise KeyError("x" * 5000)

    monkeypatch.setattr(MultimodalEstimator, "fit", broken_fit)
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": {"t.csv": to_csv(small)}})
    monkeypatch.setenv("MULTIMODAL_ML_ROOT", str(root))
    assert training.main(["train"]) == 1
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("KeyError: ") and len(reason.strip()) <= 1024
    assert reason.strip().endswith("The traceback is in the training job's log (CloudWatch "
                                   "/aws/sagemaker/TrainingJobs).")


# ---------------------------------------------------------------------------------------------- training jobs

def _tricky_text(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    rows = frame.index[::5]
    frame.loc[rows, "review_text"] = frame.loc[rows, "review_text"] + ', with a comma,\n"a quote" and\r\nbreaks'
    return frame


def _metric_lines(stdout: str) -> dict[str, float]:
    lines = [line for line in stdout.splitlines() if line.startswith(("train:", "validation:"))]
    pattern = re.compile(r"^(train|validation):([A-Za-z0-9_]+)=(-?[0-9]+\.[0-9]{6});$")
    assert all(pattern.match(line) for line in lines), lines
    return {f"{m.group(1)}:{m.group(2)}": float(m.group(3)) for m in map(pattern.match, lines)}


@pytest.mark.slow
def test_file_mode_job_with_validation_multiple_files_gzip_and_quoted_newlines(tmp_path):
    train = _tricky_text(make_dataset(240, seed=21, with_images=False))
    validation = make_dataset(80, seed=22, with_images=False)
    hyperparameters = {**FAST, "_tuning_objective_metric": "validation:accuracy",
                       "sagemaker_container_log_level": "20"}
    root = layout(tmp_path, hyperparameters=hyperparameters, channels={
        "train": {"part-0000.csv": to_csv(train.iloc[:100]), "more/part-0001.csv.gz": gzipped(to_csv(train.iloc[100:])),
                  "_SUCCESS": b""},
        "validation": {"validation.csv": to_csv(validation)}})
    job = run_job(root)
    assert job.returncode == 0, job.stderr[-5000:]
    assert job.failure is None

    # the model: complete, loadable, and it predicts the original labels
    assert CONFIG_FILE in job.model_entries and ".partial" not in job.model_entries
    model = MultimodalClassifier.load(root / "model")
    assert set(model.predict(validation.drop(columns="label"))) <= set(train["label"])

    # every row of both files, quoted line breaks included, and the validation channel were used
    metrics = json.loads((job.outputs / "metrics.json").read_text())
    assert metrics["job"]["channels"]["train"] == {
        "rows": 240, "sources": ["more/part-0001.csv.gz", "part-0000.csv"],
        "megabytes": metrics["job"]["channels"]["train"]["megabytes"]}
    assert metrics["rows"] == {"train": 240, "validation": 80}
    assert metrics["validation_source"] == "validation data"

    # metric lines: the documented form, the values of metrics.json, parsed by the MetricDefinitions
    printed = _metric_lines(job.stdout)
    assert printed["validation:accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
    assert printed["train:log_loss"] == pytest.approx(metrics["train"]["log_loss"], abs=1e-6)
    assert printed["validation:text_accuracy"] == pytest.approx(
        metrics["validation"]["experts"]["text"]["accuracy"], abs=1e-6)
    for definition in metric_definitions(problem_type=metrics["job"]["problem_type"]):
        found = re.findall(definition["Regex"], job.stdout + job.stderr)
        assert len(found) == 1, definition
        assert float(found[0]) == pytest.approx(printed[definition["Name"]], abs=1e-6)

    # reports
    for expert in ("text", "num", "cat"):
        board = pd.read_csv(job.outputs / f"leaderboard_{expert}.csv")
        assert {"model", "score_val"} <= set(board.columns) and len(board) >= 1
    for png in ("confusion_matrix.png", "fusion_training_curve.png"):
        assert (job.outputs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(map(sum, metrics["confusion_matrix"]["rows_true_columns_predicted"])) == 80

    # progress and timing in the log
    assert re.search(r"channel train: 240 row\(s\) from 2 source\(s\)", job.stderr), job.stderr[-3000:]
    assert re.search(r"channel validation: 80 row\(s\) from 1 source\(s\)", job.stderr)
    assert re.search(r"job finished in [0-9.]+ s: time budget 30 s", job.stderr)
    assert job.seconds <= 30 + OVERHEAD_ALLOWANCE_S, job.seconds


@pytest.mark.slow
def test_regression_job_with_auto_problem_type_metrics_reports_and_model(tmp_path):
    train = _tricky_text(make_regression_dataset(200, seed=23, with_images=False))
    validation = make_regression_dataset(60, seed=24, with_images=False)
    root = layout(tmp_path, hyperparameters={**FAST, "_tuning_objective_metric": "validation:rmse"}, channels={
        "train": {"train.csv": to_csv(train)}, "validation": {"validation.csv": to_csv(validation)}})
    job = run_job(root)
    assert job.returncode == 0, job.stderr[-5000:]
    assert "problem_type auto: regression" in job.stderr  # the choice, logged with its reason

    model = MultimodalEstimator.load(root / "model")
    assert model.problem_type_ == "regression"
    predicted = model.predict(validation.drop(columns="label"))
    assert predicted.dtype == "float64" and len(predicted) == len(validation)

    metrics = json.loads((job.outputs / "metrics.json").read_text())
    assert metrics["job"]["problem_type"] == "regression" and "classes" not in metrics["job"]
    assert metrics["target"]["min"] < metrics["target"]["mean"] < metrics["target"]["max"]
    printed = _metric_lines(job.stdout)
    assert printed["validation:rmse"] == pytest.approx(metrics["validation"]["rmse"], abs=1e-6)
    assert printed["validation:text_r2"] == pytest.approx(metrics["validation"]["experts"]["text"]["r2"], abs=1e-6)
    assert not any(name.endswith("accuracy") or name.endswith("log_loss") for name in printed)
    for definition in metric_definitions(problem_type="regression"):
        found = re.findall(definition["Regex"], job.stdout)
        assert len(found) == 1, definition
        assert float(found[0]) == pytest.approx(printed[definition["Name"]], abs=1e-6)

    written = {p.name for p in job.outputs.iterdir()}
    assert {"predicted_vs_actual.png", "residuals.png", "fusion_training_curve.png"} <= written
    assert "confusion_matrix.png" not in written


@pytest.mark.slow
def test_a_text_label_for_a_regression_job_fails_naming_the_rows(tmp_path):
    frame = make_regression_dataset(40, seed=25, with_images=False).astype({"label": object})
    frame.loc[6, "label"] = "twelve"
    root = layout(tmp_path, hyperparameters={**FAST, "problem_type": "regression"},
                  channels={"train": {"train.csv": to_csv(frame)}})
    failure = assert_failed_cleanly(run_job(root), "'label' is not a number", "row 7", "'twelve'")
    assert "problem_type" in failure


@pytest.mark.slow
def test_pipe_mode_job_with_an_image_column(tmp_path):
    frame = make_dataset(80, seed=33)
    hyperparameters = {**FAST, "image_model": "efficientnet_lite0", "image_batch_size": "16"}
    root = layout(tmp_path, hyperparameters=hyperparameters, channels={"train": {}}, input_modes={"train": "Pipe"})
    data = root / "input" / "data"
    data.mkdir(parents=True)
    fifo = data / "train_0"
    os.mkfifo(fifo)
    # two S3 objects streamed back to back: the second one's header appears mid-stream
    payload = gzipped(to_csv(frame.iloc[:50])) + gzipped(to_csv(frame.iloc[50:]))

    def feed():
        with open(fifo, "wb") as pipe:
            pipe.write(payload)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    job = run_job(root)
    writer.join(10)
    assert job.returncode == 0, job.stderr[-5000:]
    metrics = json.loads((job.outputs / "metrics.json").read_text())
    assert metrics["job"]["channels"]["train"]["rows"] == 80
    assert set(metrics["validation"]["experts"]) == {"text", "num", "cat", "photo_image", "joint"}
    printed = _metric_lines(job.stdout)
    assert "validation:photo_image_accuracy" in printed and "train:photo_image_log_loss" in printed
    assert "validation:joint_accuracy" in printed
    assert re.search(r"photo_image: embedded \d+ images in [0-9.]+ s \([0-9.]+ images/s", job.stderr)
    assert (job.outputs / "leaderboard_photo_image.csv").is_file()
    assert "photo_image" in MultimodalClassifier.load(root / "model").expert_names_


@pytest.mark.slow
def test_a_stopped_job_leaves_a_reason_and_no_model(tmp_path):
    frame = make_dataset(200, seed=42, with_images=False)
    root = layout(tmp_path, hyperparameters={**FAST, "n_secs": "120"}, channels={"train": {"t.csv": to_csv(frame)}})
    log_path = tmp_path / "stderr.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([str(ENTRYPOINT)], env=environment(root), stdout=subprocess.DEVNULL,
                                   stderr=log_file)
        deadline = time.monotonic() + 120
        while "fitting on" not in log_path.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(5)  # well inside AutoGluon's fit
        assert process.poll() is None, log_path.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)  # StopTrainingJob / MaxRuntimeInSeconds
        stopped = time.monotonic()
        returncode = process.wait(timeout=110)
        assert time.monotonic() - stopped < 60, "SageMaker kills the container 120 s after SIGTERM"
    job = Job(root, returncode, "", log_path.read_text(), 0)
    reason = assert_failed_cleanly(job, "Training was stopped (signal SIGTERM)", "MaxRuntimeInSeconds")
    assert len(reason) <= 1024


FINALIZER_STOP = """
import signal, sys, time
from multimodal.sagemaker.training.steps import JobStopped, _stop, catch_ignored_stops, forget_stops

class Finalized:
    def __del__(self):
        _stop(signal.SIGTERM, None)

class Other:
    def __del__(self):
        raise ValueError("not a stop")

passed_on = []
sys.unraisablehook = catch_ignored_stops(passed_on.append)
try:
    Finalized()  # dropped at once: its __del__ raises, Python ignores it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the job's own work, where the stop must arrive
        sum(range(1000))
    print("not stopped")
except JobStopped as exc:
    print("stopped:", exc)
Other()
print("passed on:", [type(u.exc_value).__name__ for u in passed_on])
Finalized()
forget_stops()  # the stop is being handled: not raised again
time.sleep(0.2)
print("forgotten")
"""


def test_a_stop_that_python_ignores_inside_a_finalizer_is_raised_again():
    """Found with checkpoints: a SIGTERM that lands in a library's __del__ (xgboost's Booster, during garbage
    collection) is printed and ignored by Python, and the job ran on to the end instead of stopping. Run in a
    fresh interpreter, as the job is (signal timers and hooks are process-wide)."""
    done = subprocess.run([sys.executable, "-c", FINALIZER_STOP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["stopped: signal SIGTERM", "passed on: ['ValueError']", "forgotten"]
    assert "arrived inside a finalizer, where Python ignores it: raising it again" in done.stderr
