import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "build_push.sh"


def _run(*args, env=None):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=env or os.environ.copy(), stdin=subprocess.DEVNULL)


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(os.sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, str(SCRIPT), str(ROOT / "setup.sh"), str(ROOT / "run-tests.sh"),
                             str(ROOT / ".ci" / "run"), *map(str, (ROOT / "tools").glob("*.sh"))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_explains_every_option():
    result = _run("--help")
    assert result.returncode == 0
    for option in ("--tag", "--base-image", "--wheels", "--no-fetch-weights", "--only", "--push", "--account",
                   "--region"):
        assert option in result.stdout


def test_unknown_options_fail_early():
    result = _run("--frobnicate")
    assert result.returncode != 0 and "unknown option: --frobnicate" in result.stderr
    assert _run("--only", "both").stderr.strip().endswith("--only takes training or inference, not 'both'")


def test_missing_docker_is_a_clear_error(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty PATH: no docker, no aws
    for tool in ("dirname", "date", "cp"):
        found = shutil.which(tool)
        if found:
            (tmp_path / tool).symlink_to(found)
    result = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode != 0 and "docker is not installed" in result.stderr


def test_push_without_aws_cli_is_a_clear_error(tmp_path):
    fake_docker = tmp_path / "docker"
    fake_docker.write_text("#!/bin/sh\nexit 0\n")  # answers `docker info`; the script stops before building
    fake_docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    env.pop("DOCKER_HOST", None)
    if shutil.which("aws", path=env["PATH"]):
        return  # a real AWS CLI is installed here; nothing to check
    result = subprocess.run(["bash", str(SCRIPT), "--push"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode != 0 and "--push needs the AWS CLI" in result.stderr
