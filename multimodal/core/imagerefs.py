"""Where an ``_image`` value's bytes come from: the value itself (base64), a file under an image directory, or an
S3 object.

The rule, per value (white space around it ignored), in this order:

1. ``s3://bucket/key`` — an S3 object, fetched with boto3: its standard credential chain and endpoint settings
   (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, ...), botocore's ``standard`` retry mode unless
   ``AWS_RETRY_MODE`` says otherwise, many objects at a time;
2. any other ``scheme://…`` (``http://``, ``file://``, ...) — refused: only S3 objects are fetched;
3. ``data:…,…`` — a data URI: the base64 after the comma;
4. a value with a ``.`` in it — a path relative to the image directory (``photos/123.jpg``): base64's alphabet has
   no ``.``, and an image file's name has an extension, so no base64 value is ever taken for a path;
5. anything else — the base64 of the image file's bytes.

Nothing outside what it is given is read: a path may not be absolute, contain ``..``, or lead (through a symbolic
link) out of the image directory; ``MULTIMODAL_S3_ALLOW`` (``s3://bucket/prefix`` entries, comma-separated)
limits which objects may be fetched with the process's credentials. Every read is bounded in size
(``MULTIMODAL_MAX_IMAGE_BYTES``) and every fetch in time (``MULTIMODAL_S3_TIMEOUT_SECONDS`` per read of the
connection, four times that for the whole object).

A problem with one value (no such file or object, too large, refused by the rules) is an ``ImageProblem``, which
the caller reports with the column and row; S3 being unreachable or refusing the credentials concerns every value,
so it is one ``ImageAccessError`` for the whole read, said once.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from . import settings
from .errors import DataError

log = logging.getLogger(__name__)

INLINE, PATH, S3 = "base64", "path", "s3"
# S3 answers in tens of milliseconds per object whatever the object's size: the pool is sized for that latency
# (objects in flight), not for the machine's cores.
S3_WORKERS = 32
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_S3_URI = re.compile(r"^s3://([^/]+)/(.+)$", re.DOTALL)


class ImageProblem(ValueError):
    """Why one ``_image`` value gave no image (the message is the reason, without column or row)."""


class ImageAccessError(DataError):
    """S3 cannot be used at all here (no route, no credentials): one error for all the values that need it."""


def max_image_bytes() -> int:
    return settings.MAX_IMAGE_BYTES.read()


def kind_of(value: str) -> str:
    """``s3``, ``path`` or ``base64`` by the rule of the module docstring; ImageProblem for other URIs."""
    text = value.strip()
    scheme = _URI.match(text)
    if scheme:
        if scheme.group(1).lower() == "s3":
            return S3
        raise ImageProblem(f"{_shown(text)}: {scheme.group(1)}:// URIs are not fetched; give an s3:// URI, a path "
                           "relative to the image directory, or the base64 of the file")
    if text.startswith("data:"):
        return INLINE
    return PATH if "." in text else INLINE


def describe(value: str) -> str:
    """How a value is named in messages: a path or URI as it is, base64 not at all."""
    try:
        kind = kind_of(value)
    except ImageProblem:
        kind = PATH
    return "" if kind == INLINE else f"{_shown(value.strip())}: "


def describe_reference(value: str) -> str:
    """A value as listed in reports: a path or URI as it is (up to 300 characters), base64 by its length."""
    text = value.strip()
    if not describe(value):
        return f"(base64, {len(text):,} characters)"
    return text if len(text) <= 300 else text[:300] + "…"


def _shown(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def decode_base64(value: str, *, head: int | None = None) -> bytes:
    """The bytes of a base64 value (a ``data:`` URI prefix and missing padding tolerated); with ``head``, only
    about the first ``head`` bytes (enough for an image's header, without decoding the whole file)."""
    text = value.strip()
    if text.startswith("data:") and "," in text[:100]:
        text = text.split(",", 1)[1]
    if head is not None and len(text) > 4 * (head // 3 + 1):
        text = text[:4 * (head // 3 + 1)]  # whole 4-character groups: no padding needed
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageProblem(
            f"the value is not valid base64 (starts with {text[:20]!r}). Encode the image file's bytes with base64, "
            "e.g. base64.b64encode(open(path, 'rb').read()).decode(); or give the file's path relative to the image "
            "directory, with its extension (photos/123.jpg), or an s3:// URI") from None


def resolve_path(root: Path, value: str) -> Path:
    """The file a relative path names under ``root``; ImageProblem if the path could lead out of it."""
    text = value.strip()
    if "\x00" in text:
        raise ImageProblem("a path may not contain a NUL character")
    path = PurePosixPath(text.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", text):
        raise ImageProblem("absolute paths are refused: give the path relative to the image directory "
                           "(photos/123.jpg)")
    if ".." in path.parts:
        raise ImageProblem("'..' is refused in image paths: give the path relative to the image directory, "
                           "without leaving it")
    target = root.joinpath(*path.parts)
    real_root, real = root.resolve(), target.resolve()
    if real != real_root and real_root not in real.parents:
        raise ImageProblem("the path leads out of the image directory (through a symbolic link); refused")
    return real


def read_file(root: Path | None, value: str) -> bytes:
    if root is None:
        raise ImageProblem("a relative path, but no image directory was given: give one (the training job's "
                           "'images' channel; MULTIMODAL_IMAGE_DIR for the server; images= in Python), or send "
                           "the image as base64 or an s3:// URI")
    path = resolve_path(root, value)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ImageProblem("not a file in the image directory")
        if size > max_image_bytes():
            raise ImageProblem(f"the file is {size:,} bytes, over the limit of {max_image_bytes():,} "
                               f"({settings.MAX_IMAGE_BYTES.name})")
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageProblem("no such file in the image directory") from None
    except PermissionError:
        raise ImageProblem("the file cannot be read (permission denied)") from None
    except IsADirectoryError:
        raise ImageProblem("not a file in the image directory") from None


# ---------------------------------------------------------------------------------------------- S3

@dataclass(frozen=True)
class S3Prefix:
    bucket: str
    prefix: str

    def allows(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


def parse_allow_list(text: str | None) -> tuple[S3Prefix, ...] | None:
    """``MULTIMODAL_S3_ALLOW``: comma-separated ``s3://bucket`` or ``s3://bucket/prefix`` entries; None = no list."""
    if text is None or not text.strip():
        return None
    entries = []
    for item in (i.strip() for i in text.split(",")):
        match = re.match(r"^s3://([^/]+)/?(.*)$", item)
        if not match:
            raise DataError(f"{settings.S3_ALLOW.name}: {item!r} is not an s3://bucket or s3://bucket/prefix entry; separate "
                            "entries with commas")
        entries.append(S3Prefix(match.group(1), match.group(2)))
    return tuple(entries)


# A client per configuration, kept for the process: creating one takes tens of milliseconds, too much per request.
# boto3 clients are thread-safe, and refresh a role's credentials themselves.
_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def s3_client(timeout: float, workers: int) -> Any:
    """boto3's S3 client under the environment's settings, with our timeouts, pool size and (unless
    ``AWS_RETRY_MODE`` is set) the ``standard`` retry mode."""
    key = (timeout, workers) + settings.aws_client_environment()
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            import boto3
            from botocore.config import Config
            retries = {} if settings.aws_retry_mode_set() else {"retries": {"mode": "standard"}}
            _CLIENTS[key] = boto3.session.Session().client("s3", config=Config(
                connect_timeout=timeout, read_timeout=timeout, max_pool_connections=workers, **retries))
        return _CLIENTS[key]


def s3_location(uri: str, allow: tuple[S3Prefix, ...] | None) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI that ``allow`` (None: no allow-list) lets through; ImageProblem otherwise."""
    match = _S3_URI.match(uri.strip())
    if not match:
        raise ImageProblem("not an s3://bucket/key URI (the key is missing)")
    bucket, key = match.group(1), match.group(2)
    if allow is not None and not any(p.allows(bucket, key) for p in allow):
        raise ImageProblem(f"outside the S3 locations {settings.S3_ALLOW.name} allows "
                           f"({', '.join(f's3://{p.bucket}/{p.prefix}' for p in allow)}); refused")
    return bucket, key


class S3Fetcher:
    """Fetches S3 objects for image values, ``S3_WORKERS`` at a time, within the allow-list and the limits."""

    def __init__(self, allow: tuple[S3Prefix, ...] | None = None, *, workers: int = S3_WORKERS) -> None:
        self.allow = allow if allow is not None else parse_allow_list(settings.S3_ALLOW.read())
        self.timeout = settings.S3_TIMEOUT_SECONDS.read()
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._fatal: ImageAccessError | None = None

    def _get_client(self) -> Any:
        return s3_client(self.timeout, self.workers)

    def fetch_many(self, uris: Sequence[str]) -> list[bytes | ImageProblem]:
        """Each URI's bytes, or the ImageProblem that kept it; ImageAccessError when S3 cannot be used at all."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="s3-fetch")
        results = list(self._pool.map(self._fetch_or_problem, uris))
        if self._fatal is not None:
            raise self._fatal
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _fetch_or_problem(self, uri: str) -> bytes | ImageProblem:
        if self._fatal is not None:
            return ImageProblem("not fetched")
        try:
            return self.fetch(uri)
        except ImageProblem as problem:
            return problem
        except ImageAccessError as exc:
            self._fatal = exc
            return ImageProblem(str(exc))

    @staticmethod
    def check_allowed(uri: str) -> None:
        """ImageProblem unless ``uri`` is an s3://bucket/key URI that ``MULTIMODAL_S3_ALLOW`` lets through."""
        s3_location(uri, parse_allow_list(settings.S3_ALLOW.read()))

    def fetch(self, uri: str) -> bytes:
        bucket, key = s3_location(uri, self.allow)
        from botocore import exceptions as boto
        try:
            response = self._get_client().get_object(Bucket=bucket, Key=key)
            return self._read_body(response)
        except boto.ClientError as exc:
            raise ImageProblem(_client_error_reason(exc)) from None
        except (boto.NoCredentialsError, boto.PartialCredentialsError, boto.CredentialRetrievalError) as exc:
            raise ImageAccessError(
                f"cannot fetch s3:// images: no AWS credentials ({exc}). Give the training job or endpoint an IAM "
                "role that may s3:GetObject the images, or set AWS credentials. Under network isolation "
                "(EnableNetworkIsolation) the container has neither credentials nor a route to S3: give the images "
                "as files (the 'images' channel) or as base64") from None
        except (boto.EndpointConnectionError, boto.ConnectTimeoutError) as exc:
            raise ImageAccessError(
                f"cannot reach S3 to fetch s3:// images ({exc}). Under network isolation (EnableNetworkIsolation) "
                "or without a route to S3 the container cannot fetch objects: give the images as files (the "
                "'images' channel) or as base64") from None
        except (boto.ReadTimeoutError, TimeoutError) as exc:
            raise ImageProblem(f"S3 did not answer in time ({exc}; {settings.S3_TIMEOUT_SECONDS.name}={self.timeout:g})") from None

    def _read_body(self, response: dict) -> bytes:
        limit = max_image_bytes()
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if length is not None and length > limit:
                raise ImageProblem(f"the object is {length:,} bytes, over the limit of {limit:,} "
                                   f"({settings.MAX_IMAGE_BYTES.name})")
            deadline = time.monotonic() + 4 * self.timeout
            chunks, size = [], 0
            while True:
                chunk = body.read(1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise ImageProblem(f"the object is over the limit of {limit:,} bytes ({settings.MAX_IMAGE_BYTES.name})")
                if time.monotonic() > deadline:
                    raise ImageProblem(f"the object took more than {4 * self.timeout:g} s to arrive; refused "
                                       f"({settings.S3_TIMEOUT_SECONDS.name}={self.timeout:g})")
        finally:
            body.close()


def _client_error_reason(exc: Any) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code in ("NoSuchKey", "404", "NotFound"):
        return "no such S3 object"
    if code == "NoSuchBucket":
        return "no such S3 bucket"
    if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
        return "access denied: the credentials in use may not s3:GetObject it"
    return f"S3 refused it: {code} {error.get('Message', '')}".strip()


# ---------------------------------------------------------------------------------------------- the source

class ImageSource:
    """Reads the bytes behind ``_image`` values: base64 inline, files under ``root``, S3 objects."""

    def __init__(self, root: str | Path | None = None, *, s3: S3Fetcher | None = None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"the image directory {str(self.root)!r} does not exist or is not a directory")
        self._s3 = s3

    @property
    def s3(self) -> S3Fetcher:
        if self._s3 is None:
            self._s3 = S3Fetcher()
        return self._s3

    def read_many(self, values: Sequence[str]) -> list[bytes | ImageProblem]:
        """Each value's image file bytes, or the problem that kept them (S3 objects fetched concurrently)."""
        results: list[bytes | ImageProblem] = []
        remote: list[int] = []
        for position, value in enumerate(values):
            try:
                kind = kind_of(value)
                if kind == S3:
                    remote.append(position)
                    results.append(ImageProblem("not fetched"))
                else:
                    results.append(decode_base64(value) if kind == INLINE else read_file(self.root, value))
            except ImageProblem as problem:
                results.append(problem)
        if remote:
            for position, fetched in zip(remote, self.s3.fetch_many([values[p] for p in remote])):
                results[position] = fetched
        return results

    def close(self) -> None:
        if self._s3 is not None:
            self._s3.close()

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
