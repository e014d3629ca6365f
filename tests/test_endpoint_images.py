"""The inference image as SageMaker's endpoints run it: a serverless-sized container (memory limit, read-only
root) and a real-time endpoint deployed by the SageMaker Python SDK's local mode. Black box: only HTTP and the
SDK; answers compared with the same model predicting in this process."""
from __future__ import annotations

import base64
import json
import subprocess
import tarfile
import time

import pandas as pd
import pytest
import torch
from support import csv_body, free_port, http_request, sh

from multimodal import MultimodalClassifier
from multimodal.tools.synthetic import make_dataset, photo_jpeg

# the first Docker test of a session builds the images (see tests/test_docker.py)
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(3000)]

SERVERLESS_PING_SECONDS = 180  # a serverless endpoint's container must answer /ping within 3 minutes
SERVERLESS_PAYLOAD = 4 * 1024 * 1024


def _http(port: int, method: str, path: str, body: bytes | None = None, content_type: str = "text/csv",
          timeout: float = 60) -> tuple[int, bytes]:
    status, _, data = http_request(port, method, path, body, {"Content-Type": content_type, "Accept": content_type},
                                   timeout)
    return status, data


def _wait_for_ping(port: int, name: str, env: dict, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        state = json.loads(sh("docker", "inspect", "--format", "{{json .State}}", name, timeout=60, env=env).stdout)
        assert state["Running"], f"the container stopped: {state}"
        try:
            if _http(port, "GET", "/ping", timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"no /ping 200 within {limit:.0f} s")


def _labels(answer: bytes) -> list[str]:
    return [line.split(",")[1] for line in answer.decode().split("\n")]


def test_a_serverless_sized_container_serves_with_one_worker_within_its_memory(images, docker_env, serving_model_dir):
    """2 GiB, one CPU, read-only root (a serverless endpoint's shape): one worker by default, /ping within 3
    minutes, a one-row request and a 4 MB request of real-size photos answered as the model answers in-process."""
    _, inference = images
    port, name = free_port(), f"multimodal-test-serverless-{free_port()}"
    rows = make_dataset(12, seed=43).drop(columns="label").astype(str)  # as test_launcher.py compares
    big = rows.copy()
    big["photo_image"] = [base64.b64encode(photo_jpeg(230, seed=s)).decode() for s in range(len(big))]
    body = csv_body(big)
    assert 3 * 2**20 < len(body) <= SERVERLESS_PAYLOAD
    model = MultimodalClassifier.load(serving_model_dir)
    # the in-process model's compute threads: another count changes the last bits of a convolution, which can
    # flip a near-tie and these labels are compared exactly (the worker count is the server's own choice)
    sh("docker", "run", "-d", "--name", name, "--memory", "2g", "--memory-swap", "2g", "--cpus", "1", "--read-only",
       "--tmpfs", "/tmp", "-e", f"MULTIMODAL_THREADS={torch.get_num_threads()}", "-v", f"{serving_model_dir}:/opt/ml/model:ro", "-p", f"127.0.0.1:{port}:8080", inference,
       "serve", timeout=120, env=docker_env)
    try:
        _wait_for_ping(port, name, docker_env, SERVERLESS_PING_SECONDS)
        status, one = _http(port, "POST", "/invocations", csv_body(rows.head(1)))
        assert status == 200 and _labels(one) == list(model.predict(rows.head(1)).astype(str))
        status, answer = _http(port, "POST", "/invocations", body, timeout=120)
        assert status == 200 and _labels(answer) == list(model.predict(big).astype(str))
        peak = int(sh("docker", "exec", name, "sh", "-c", "cat /sys/fs/cgroup/memory.peak 2>/dev/null || "
                      "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes", timeout=60, env=docker_env).stdout)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60, env=docker_env)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120, env=docker_env)
    server_line = next(line for line in logs.stderr.splitlines() if "worker(s)" in line)
    assert " 1 worker(s) [" in server_line and "serverless" in server_line, server_line
    print(f"serverless-sized container: peak {peak / 2**20:.0f} MiB of 2048; {server_line}")


@pytest.fixture(scope="module")
def sdk_python(docker_env) -> str:
    return sh("bash", "tools/sdk-venv.sh", timeout=900, env=docker_env).stdout.strip().splitlines()[-1]


def _loopback_compose(tmp_path, env: dict) -> dict:
    """A docker-compose first on PATH that publishes local mode's endpoint on 127.0.0.1 only (the SDK writes
    ``PORT:8080``, every interface), then runs the real one."""
    real = subprocess.run(["sh", "-c", "command -v docker-compose"], capture_output=True, text=True, env=env)
    if real.returncode:  # the SDK then uses `docker compose` (v2), whose file it writes the same way
        return env
    shim = tmp_path / "bin" / "docker-compose"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -f ]; then\n"
                    "    sed -i -E \"s/^( *- )'?([0-9]+):8080'?$/\\1'127.0.0.1:\\2:8080'/\" \"$a\"\n  fi\n"
                    f"  prev=$a\ndone\nexec {real.stdout.strip()} \"$@\"\n")
    shim.chmod(0o755)
    return {**env, "PATH": f"{shim.parent}:{env['PATH']}"}


def test_the_sdk_local_mode_deploys_an_endpoint_that_answers_every_content_type(images, docker_env, sdk_python,
                                                                                 serving_model_dir, tmp_path):
    """README's real-time guide, through the SDK (`Model(...).deploy(instance_type="local")`, `predict`):
    CSV, JSON Lines and JSON in and out, one record and many, the model's own predictions."""
    _, inference = images
    rows = make_dataset(40, seed=44).drop(columns="label").dropna().head(12).reset_index(drop=True)
    rows.loc[0, "review_text"] = 'Fits well, "true to size", washes fine'
    rows.to_csv(tmp_path / "rows.csv", index=False)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in sorted(serving_model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    env = _loopback_compose(tmp_path, docker_env)
    out = sh(sdk_python, "tools/sdk_local_endpoint.py", "--image", inference, "--model-data",
             str(tmp_path / "model.tar.gz"), "--rows", str(tmp_path / "rows.csv"), "--port", str(free_port()),
             "--requests", "3", "--env", f"MULTIMODAL_THREADS={torch.get_num_threads()}", timeout=900, env=env).stdout
    cases = json.loads(out.strip().splitlines()[-1])["cases"]
    model = MultimodalClassifier.load(serving_model_dir)
    expected = [str(label) for label in model.predict(rows)]
    first_id = str(rows.loc[0, "ID"])
    assert cases["1 row, text/csv"]["answer"] == f"{first_id},{expected[0]}"
    jsonl = json.loads(cases["1 row, application/jsonlines"]["answer"])
    (json_record,) = json.loads(cases["1 row, application/json"]["answer"])
    for record in (jsonl, json_record):
        assert (str(record["ID"]), record["label"]) == (first_id, expected[0])
        assert max(record["probabilities"], key=record["probabilities"].get) == expected[0]
    many = pd.DataFrame([line.split(",") for line in cases["12 rows, text/csv"]["answer"].split("\n")])
    assert many[0].tolist() == rows["ID"].astype(str).tolist() and many[1].tolist() == expected
    print({case: (figures["p50_ms"], figures["max_ms"]) for case, figures in cases.items()})
