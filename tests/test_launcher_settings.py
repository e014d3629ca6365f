"""The server's settings: environment variables → workers, threads, limits, gunicorn options."""
from __future__ import annotations

import pytest
from support import StandInModel

from multimodal.sagemaker.serving import launcher as serve
from multimodal.sagemaker.serving.app import create_app


def test_configuration_from_environment(tmp_path):
    (tmp_path / "model").mkdir()
    env = {"MULTIMODAL_ML_ROOT": str(tmp_path), "MODEL_SERVER_WORKERS": "3", "MODEL_SERVER_TIMEOUT": "700"}
    config = serve.read_config(env)
    assert config.model_dir == tmp_path / "model" and config.workers == 3 and config.timeout == 700
    assert config.port == 8080 and config.host == "0.0.0.0" and config.max_payload_mb == 6
    assert config.threads == max(1, serve.cpu_count() // 3)
    env.update(SAGEMAKER_MODEL_SERVER_WORKERS="2", SAGEMAKER_MODEL_SERVER_TIMEOUT="1200",
               SAGEMAKER_BIND_TO_PORT="9090", SAGEMAKER_MAX_PAYLOAD_IN_MB="20", MULTIMODAL_CSV_PROBABILITIES="true",
               MULTIMODAL_BAD_RECORDS="emit", MULTIMODAL_THREADS="5")
    config = serve.read_config(env)
    assert (config.workers, config.timeout, config.port, config.max_payload_mb) == (2, 1200, 9090, 20)
    assert config.csv_probabilities and config.bad_records == "emit" and config.threads == 5
    assert serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path)}).timeout >= 600
    for bad in ({"MODEL_SERVER_WORKERS": "zero"}, {"SAGEMAKER_MODEL_SERVER_WORKERS": "0"},
                {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "500"}, {"MULTIMODAL_BAD_RECORDS": "skip"},
                {"MULTIMODAL_CSV_PROBABILITIES": "maybe"}):
        with pytest.raises(serve.ConfigError):
            serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path), **bad})


def test_default_workers_from_cores_and_memory():
    gb = 10 ** 9
    assert serve.default_workers(cores=8, available=64 * gb, per_worker=int(1.5 * gb)) == 8
    assert serve.default_workers(cores=8, available=4 * gb, per_worker=int(1.5 * gb)) == 2  # 3.2 / 1.5
    assert serve.default_workers(cores=8, available=1 * gb, per_worker=int(1.5 * gb)) == 1
    assert serve.default_workers(cores=1, available=64 * gb, per_worker=int(1.5 * gb)) == 1


def test_environment_and_gunicorn_options(tmp_path):
    (tmp_path / "model").mkdir()
    config = serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path), "MODEL_SERVER_WORKERS": "2",
                                "MULTIMODAL_THREADS": "3", "MULTIMODAL_CACHE_DIR": str(tmp_path / "c")})
    env: dict[str, str] = {"TORCH_HOME": "/keep"}
    serve.prepare_environment(config, env)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "3" and env["TORCH_HOME"] == "/keep"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["KERAS_HOME"].startswith(str(tmp_path / "c")) and env["MPLCONFIGDIR"].startswith(str(tmp_path))
    options = serve.gunicorn_options(config, tmp_path)
    assert options["control_socket_disable"] is True and options["preload_app"] is False
    assert options["workers"] == 2 and options["timeout"] == config.timeout and options["bind"] == ["0.0.0.0:8080"]
    from gunicorn.workers.gasgi import ASGIWorker
    assert issubclass(options["worker_class"], ASGIWorker) and config.http_threads >= 2


def test_batch_transform_variables_size_the_server(tmp_path, monkeypatch):
    """SageMaker's batch variables: one worker (with every core) when one transform at a time is asked for."""
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(serve, "cpu_count", lambda: 16)
    monkeypatch.setattr(serve, "available_memory", lambda: 64 * 10 ** 9)
    monkeypatch.setattr(serve, "memory_limit", lambda: 64 * 10 ** 9)
    base = {"MULTIMODAL_ML_ROOT": str(tmp_path)}
    assert serve.read_config(base).workers == 16  # an endpoint: as many as cores and memory allow
    config = serve.read_config({**base, "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1",
                                "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"})
    assert (config.workers, config.threads, config.batch_strategy) == (1, 16, "SINGLE_RECORD")
    assert "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=1" in config.workers_reason
    config = serve.read_config({**base, "SAGEMAKER_BATCH": "True", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"})
    assert (config.workers, config.threads, config.batch_strategy) == (4, 4, "MULTI_RECORD")
    # never more workers than the machine allows, and an explicit worker count wins
    assert serve.read_config({**base, "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "64"}).workers == 16
    assert serve.read_config({**base, "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1",
                              "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}).workers == 3
    # the variables without SAGEMAKER_BATCH (an endpoint) change nothing; SDK spellings are accepted
    assert serve.read_config({**base, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1"}).workers == 16
    assert serve.read_config({**base, "SAGEMAKER_BATCH_STRATEGY": "MultiRecord"}).batch_strategy == "MULTI_RECORD"
    with pytest.raises(serve.ConfigError, match="SAGEMAKER_BATCH_STRATEGY"):
        serve.read_config({**base, "SAGEMAKER_BATCH_STRATEGY": "ALL_AT_ONCE"})
    client = create_app(StandInModel(), settings=config.server_settings(), background=False).test_client()
    assert client.get("/execution-parameters").get_json() == {"MaxConcurrentTransforms": 4,
                                                              "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_a_multi_model_endpoint_has_one_worker_with_every_core_and_a_memory_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(serve, "cpu_count", lambda: 8)
    monkeypatch.setattr(serve, "available_memory", lambda: 10 * 2**30)
    env = {"MULTIMODAL_ML_ROOT": str(tmp_path), "SAGEMAKER_MULTI_MODEL": "true"}  # no model/ at start
    config = serve.read_config(env)
    assert config.multi_model and config.workers == 1 and config.threads == 8
    assert config.models_memory_bytes == 8 * 2**30  # 0.8 × what is available
    config = serve.read_config({**env, "SAGEMAKER_MODEL_SERVER_WORKERS": "4", "MULTIMODAL_MODELS_MEMORY_MB": "3000"})
    assert config.workers == 1 and "4 worker(s) asked for are not used" in config.workers_reason
    assert config.models_memory_bytes == 3000 * 2**20
    assert not serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path)}).multi_model
    for bad in ({"SAGEMAKER_MULTI_MODEL": "sometimes"}, {"MULTIMODAL_MODELS_MEMORY_MB": "0"}):
        with pytest.raises(serve.ConfigError):
            serve.read_config({**env, **bad})


@pytest.mark.parametrize("limit_mb, expected", [(1024, 1), (6144, 1), (8192, 4)])
def test_a_container_of_a_serverless_endpoints_size_starts_one_worker(tmp_path, monkeypatch, limit_mb, expected):
    """Serverless endpoints have 1-6 GiB and no worker setting: one worker with every core, whatever is free."""
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(serve, "cpu_count", lambda: 4)
    monkeypatch.setattr(serve, "memory_limit", lambda: limit_mb * 2**20)
    monkeypatch.setattr(serve, "available_memory", lambda: int(limit_mb * 2**20 * 0.9))
    config = serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path)})
    assert (config.workers, config.threads) == (expected, 4 // expected)
    if expected == 1:
        assert "serverless" in config.workers_reason and f"{limit_mb / 1024:.1f} GiB" in config.workers_reason
    # an explicit worker count still wins
    assert serve.read_config({"MULTIMODAL_ML_ROOT": str(tmp_path), "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}).workers == 2
