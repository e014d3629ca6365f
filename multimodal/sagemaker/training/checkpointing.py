"""Managed spot training: the training job keeps its finished work in the checkpoint directory that SageMaker
syncs to ``CheckpointConfig.S3Uri`` and copies back into a restarted job (``multimodal.core.checkpoints`` says
what is kept and when it is reused).

Which directory: ``MULTIMODAL_CHECKPOINTS`` when set (CheckpointConfig's LocalPath when it is not the default;
``off`` keeps none), else ``<ml root>/checkpoints`` when it exists — SageMaker creates it for a job with a
CheckpointConfig, so a job without one keeps nothing. Only the host that trains (the head) calls this.

The data's fingerprint, computed before anything is read: the name, size and SHA-256 of every CSV file of the
channels, and the name and size of every file of the images channel. Without one (a Pipe-mode channel, or
ShardedByS3Key on several hosts, where the head sees only its own share of the files) the embedded rows are
not kept and the time budget restarts with each attempt; the experts and the fusion still are.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from multimodal.core.checkpoints import Checkpoints, digest, file_digest, listing_digest
from multimodal.sagemaker.environment import CHECKPOINTS, CHECKPOINTS_OFF
from multimodal.sagemaker.opt_ml import IMAGES_CHANNEL, Paths

from .channels import SHARDED, ChannelConfig, list_csv_files

log = logging.getLogger("multimodal.sagemaker.training.job")


def checkpoint_directory(paths: Paths) -> Path | None:
    """The job's checkpoint directory, or None when it keeps none."""
    chosen = CHECKPOINTS.read()
    if chosen == CHECKPOINTS_OFF:
        log.info("checkpoints: off (%s=%s)", CHECKPOINTS.name, CHECKPOINTS_OFF)
        return None
    if chosen is not None:
        return chosen
    return paths.checkpoint_dir if paths.checkpoint_dir.is_dir() else None


def job_checkpoints(paths: Paths, configs: dict[str, ChannelConfig], *, hosts: int = 1) -> Checkpoints | None:
    """The job's ``Checkpoints`` (with the data's fingerprint where one can be taken), or None."""
    directory = checkpoint_directory(paths)
    if directory is None:
        return None
    started = time.monotonic()
    data, why_not = data_fingerprint(paths.data_dir, configs, hosts=hosts)
    if data is None:
        log.info("checkpoints in %s: finished experts and the fusion are kept; the embedded rows are not, and the "
                 "time budget restarts with each attempt: %s", directory, why_not)
    else:
        log.info("checkpoints in %s: the embedded rows, each finished expert and the fusion are kept (data "
                 "fingerprint %s… of the channels' files, taken in %.1f s)", directory, data[:12],
                 time.monotonic() - started)
    return Checkpoints(directory, data=data)


def data_fingerprint(data_dir: Path, configs: dict[str, ChannelConfig], *, hosts: int = 1
                     ) -> tuple[str | None, str]:
    """(a digest of the channels' files, "") or (None, why none can be taken)."""
    parts = []
    for name, config in sorted(configs.items()):
        if config.input_mode == "Pipe":
            return None, f"channel {name!r} is in Pipe mode (its stream cannot be read twice)"
        if hosts > 1 and config.distribution == SHARDED:
            return None, f"channel {name!r} is ShardedByS3Key over {hosts} hosts (this host sees only its share)"
        directory = data_dir / name
        if name == IMAGES_CHANNEL:
            parts.append([name, listing_digest(directory)])
        else:
            parts.append([name, [(relative, path.stat().st_size, file_digest(path))
                                 for relative, path in list_csv_files(name, directory)]])
    return digest(parts), ""
