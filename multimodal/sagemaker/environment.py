"""Every environment variable the SageMaker layers read — the ``/opt/ml`` root, the multi-host roles, the Ray
cluster, the job's name — with its default, its type and the error a bad value gets (``Setting``, as for the
estimator's own in ``multimodal.core.settings``), and the environment handed to the processes they start. The
inference server's variables are read by its launcher (``multimodal.sagemaker.serving.launcher.read_config``)
before anything heavy is imported.

Imports nothing heavy.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

from multimodal.core.settings import Setting, library_defaults, positive_float, positive_int


def tcp_port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError("must be a TCP port number between 1 and 65535")
    return int(raw)


def host_addresses(raw: str) -> dict[str, str]:
    try:
        mapping = json.loads(raw)
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict):
        raise ValueError('must be a JSON object mapping host names to addresses, e.g. {"algo-1": "127.0.0.1"}')
    return {str(k): str(v) for k, v in mapping.items()}


ML_ROOT = Setting("MULTIMODAL_ML_ROOT", Path("/opt/ml"), Path,
                  "the directory that stands for /opt/ml (local runs and tests)")
# TCP port of the head's status service. Chosen below Linux's ephemeral range (32768-60999), so that no outgoing
# connection on the head can already hold it, and away from the ports distributed training stacks use by default
# (22 for MPI's ssh, 6379/8265/10001 for Ray, 29500 for torch.distributed) and from the inference server's 8080.
HOSTS_PORT = Setting("MULTIMODAL_HOSTS_PORT", 7560, tcp_port, "the TCP port of the head host's status service")
# On SageMaker the hosts' names resolve only once every instance is up, and the head may start later.
HOSTS_TIMEOUT = Setting("MULTIMODAL_HOSTS_TIMEOUT", 600.0, positive_float,
                        "the seconds an extra host keeps trying to reach the head")
HOSTS_BIND = Setting("MULTIMODAL_HOSTS_BIND", "", str,
                     'the address the head listens on ("" = every interface; tests use 127.0.0.1)')
# local emulation: host names on loopback addresses without touching /etc/hosts
HOSTS_ADDRESSES = Setting("MULTIMODAL_HOSTS_ADDRESSES", {}, host_addresses,
                          "the address to reach each host at, by name")
RAY_PORT = Setting("MULTIMODAL_RAY_PORT", 6379, tcp_port, "the TCP port of the Ray cluster's head")
NODE_CPUS = Setting("MULTIMODAL_NODE_CPUS", None, positive_int,
                    "the CPUs a host offers the Ray cluster (unset: all of them)")
TRAINING_JOB_NAME = Setting("TRAINING_JOB_NAME", "(local)", str, "the training job's name (SageMaker sets it)")
CHECKPOINTS_OFF = "off"


def checkpoint_directory(raw: str) -> Path | str:
    return CHECKPOINTS_OFF if raw.lower() == CHECKPOINTS_OFF else Path(raw)


# SageMaker copies a job's CheckpointConfig.S3Uri into its LocalPath (/opt/ml/checkpoints unless set otherwise)
# before the container starts, and syncs it back to S3 while it runs. Unset: <ml root>/checkpoints, used when it
# exists (SageMaker creates it for a job with a CheckpointConfig).
CHECKPOINTS = Setting("MULTIMODAL_CHECKPOINTS", None, checkpoint_directory,
                      "the training job's checkpoint directory: CheckpointConfig's LocalPath when it is not "
                      f"/opt/ml/checkpoints, or {CHECKPOINTS_OFF!r} to keep no checkpoints")
TRAINING_SETTINGS = (ML_ROOT, HOSTS_PORT, HOSTS_TIMEOUT, HOSTS_BIND, HOSTS_ADDRESSES, RAY_PORT, NODE_CPUS,
                     TRAINING_JOB_NAME, CHECKPOINTS)


def ml_root(environ: Mapping[str, str] | None = None) -> Path:
    """``/opt/ml``, or ``$MULTIMODAL_ML_ROOT`` (local runs and tests)."""
    return ML_ROOT.read(environ)


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``: what a process we start (Ray, an emulated job) gets."""
    return {**os.environ, **overrides}


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up messages off, unless the user set their level."""
    library_defaults(TF_CPP_MIN_LOG_LEVEL="2")


def matplotlib_config() -> None:
    """matplotlib's cache in a writable temporary directory when none is set (the container's $HOME may not be
    writable)."""
    if not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = os.path.join(tempfile.gettempdir(), f"matplotlib-{os.getuid()}")
