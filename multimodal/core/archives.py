"""Directories sent between the machines of a cluster: a tar archive in memory, unpacked only inside its target."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from .errors import ClusterError


def pack(directory: Path) -> bytes:
    """``directory``'s files as an uncompressed tar archive (models compress poorly and travel on a LAN)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


def unpack(archive: bytes, path: Path) -> None:
    """``archive`` (``pack``) into ``path``, replacing what was there."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    root = path.resolve()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        # tarfile's extraction filters need Python 3.11.4+; the images' Debian Python is 3.11.2
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()) or not (root / member.name).resolve().is_relative_to(root):
                raise ClusterError(f"an archive from another host holds {member.name!r}, which is not a file "
                                   "inside it")
        tar.extractall(path)
