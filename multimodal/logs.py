"""Logging set-up of the command-line entry points (the ``multimodal`` command, the training job, the server).

Logs go to stderr; stdout is kept for what a program prints as its output (the training job's metric lines).
"""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMAT_WITH_PROCESS = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"  # several processes


def configure_logging(level: str = "info", *, with_process: bool = False) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format=FORMAT_WITH_PROCESS if with_process else FORMAT)
