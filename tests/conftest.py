"""Shared fixtures: small generated data and one trained model reused by many tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from multimodal import MultimodalClassifier, MultimodalRegressor  # noqa: E402
from multimodal.tools.synthetic import make_dataset, make_regression_dataset  # noqa: E402

# The small model the server tests serve (tests/test_app.py, tests/test_launcher.py), trained once per session.
SERVING_HYPERPARAMETERS = {"quality": "toy", "n_folds": 2, "n_mins": 0, "n_secs": 45, "n_epochs": 40,
                           "patience": 5, "image_model": "efficientnet_lite0"}

# The Docker tests' images (tests/test_docker.py, tests/test_endpoint_images.py): built once per session.
BASE_IMAGE = "multimodal-base:bookworm"
IMAGE_PREFIX, IMAGE_TAG = "multimodal-ci", "test"

# Small but real: every modality present, a few holes in each, a real pretrained encoder. The budget is a
# bound, not a target: without use_leftover_time=false the joint expert would be fitted again with the minutes
# the toy experts leave (tests/test_leftover.py covers that).
FAST_HYPERPARAMETERS = {"quality": "toy", "image_model": "efficientnet_lite0", "n_mins": 6, "n_folds": 3,
                        "n_epochs": 100, "patience": 10, "use_leftover_time": False}


@pytest.fixture(scope="session")
def train_df():
    return make_dataset(360, seed=11)


@pytest.fixture(scope="session")
def test_df():
    return make_dataset(160, seed=12)


@pytest.fixture(scope="session")
def trained(train_df):
    return MultimodalClassifier(**FAST_HYPERPARAMETERS).fit(train_df)


@pytest.fixture(scope="session")
def regression_test_df():
    return make_regression_dataset(160, seed=14)


@pytest.fixture(scope="session")
def trained_regressor():
    return MultimodalRegressor(**FAST_HYPERPARAMETERS).fit(make_regression_dataset(360, seed=13))


@pytest.fixture(scope="session")
def saved_model_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    trained.save(path)
    return path


@pytest.fixture(scope="session")
def serving_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("serving-model")
    MultimodalClassifier(**SERVING_HYPERPARAMETERS).fit(make_dataset(150, seed=21)).save(path)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on loopback (moto's server mode) for the session; stopped by its PID at the end."""
    from support import S3Server
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def docker_env():
    """The environment of a working docker CLI: tools/docker-up.sh starts dockerd when none answers."""
    from support import sh
    exports = sh("bash", "tools/docker-up.sh", timeout=600).stdout
    env = os.environ.copy()
    for line in exports.splitlines():
        if line.startswith("export DOCKER_HOST="):
            env["DOCKER_HOST"] = line.split("=", 1)[1].strip().strip("'\"")
    sh("bash", "tools/base-image.sh", BASE_IMAGE, timeout=900, env=env)
    return env


@pytest.fixture(scope="session")
def images(docker_env):
    """(training image, inference image), built by build_push.sh from this tree."""
    from support import sh
    args = ["bash", "build_push.sh", "--name-prefix", IMAGE_PREFIX, "--tag", IMAGE_TAG, "--base-image", BASE_IMAGE,
            "--no-fetch-weights"]
    if Path("/opt/wheels").is_dir():  # the machine's CPU PyTorch wheel: no CUDA packages in the images
        args += ["--wheels", "/opt/wheels"]
    sh(*args, timeout=3000, env=docker_env)
    return f"{IMAGE_PREFIX}-training:{IMAGE_TAG}", f"{IMAGE_PREFIX}-inference:{IMAGE_TAG}"
