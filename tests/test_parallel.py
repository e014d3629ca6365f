"""Parallel bagging folds: when Ray is used, and that the fit's own Ray instance is private, offline and stopped."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from multimodal.core.parallel import MIN_PARALLEL_CPUS, fold_strategy, local_ray, ray_available


def test_ray_is_installed_in_the_range_autogluon_accepts():
    available, why = ray_available()
    assert available, why


@pytest.mark.parametrize(("setting", "cpus", "expected"), [
    ("false", 64, "sequential_local"),
    ("auto", MIN_PARALLEL_CPUS - 1, "sequential_local"),
    ("auto", MIN_PARALLEL_CPUS, "parallel_local"),
    ("true", 1, "parallel_local"),
])
def test_fold_strategy(setting, cpus, expected):
    assert fold_strategy(setting, cpus) == expected


def test_sequential_folds_never_start_ray():
    with local_ray("sequential_local"):
        assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_the_fits_ray_ignores_any_other_cluster_and_is_gone_afterwards(tmp_path):
    short_tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    # A stale session file or RAY_ADDRESS would make a bare ray.init() try to join that cluster and fail.
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, tempfile, ray\n"
        "from multimodal.core.parallel import local_ray\n"
        "with local_ray('parallel_local'):\n"
        "    assert ray.is_initialized()\n"
        "    assert len(ray.nodes()) == 1 and ray.cluster_resources()['CPU'] >= 1\n"
        "    temp = ray._private.worker._global_node.get_temp_dir_path()\n"
        "    print('temp', temp)\n"
        "assert not ray.is_initialized()\n"
        "assert not os.path.exists(temp), temp\n"
        "print('ok')\n")
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9", "TMPDIR": str(short_tmp)}
    try:
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180)
        leftovers = list(short_tmp.iterdir())
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert "ok" in lines, out.stdout
    temp = next(line.split(" ", 1)[1] for line in lines if line.startswith("temp "))
    assert Path(temp).is_relative_to(short_tmp)  # Ray wrote under $TMPDIR only
    assert leftovers == []  # and removed it all


def test_the_server_never_imports_ray(serving_model_dir):
    """The server's modules load the model and predict without Ray ever being imported."""
    script = ("import sys\n"
              "import multimodal.sagemaker.serving.app, multimodal.sagemaker.serving.launcher\n"
              "from multimodal.core.estimator import MultimodalClassifier\n"
              "from multimodal.tools.synthetic import make_dataset\n"
              f"model = MultimodalClassifier.load({str(serving_model_dir)!r})\n"
              "model.predict(make_dataset(20, seed=3).drop(columns='label'))\n"
              "print('ray imported:', 'ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ray imported: False" in out.stdout


def test_the_fold_processes_can_import_torchvision_for_realmlp():
    """RealMLP (pytabkit) imports torchvision inside the fold processes; the set-up hook of our Ray instance puts
    the workaround for its PyPI wheel in place there (multimodal.core.images.allow_torchvision_import)."""
    script = ("import ray\n"
              "from multimodal.core.parallel import local_ray\n"
              "def probe():\n"
              "    import torchvision\n"
              "    return torchvision.__version__\n"
              "with local_ray('parallel_local'):\n"
              "    print('torchvision', ray.get(ray.remote(probe).remote()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torchvision 0.28.0" in out.stdout, out.stdout
