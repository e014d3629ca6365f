"""The _image value rule (base64, data URI, relative path, s3:// URI), paths that may not leave their directory,
and S3 objects fetched from a real S3 API on loopback (moto's server mode)."""
import base64
import os
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multimodal.core import settings as core_settings
from multimodal.core.errors import DataError
from multimodal.core.imagerefs import (INLINE, PATH, S3, ImageAccessError, ImageProblem, ImageSource, S3Fetcher,
                                       describe_reference, kind_of, parse_allow_list, resolve_path)
from multimodal.tools.synthetic import photo_jpeg


@pytest.mark.parametrize("value, kind", [
    ("s3://bucket/photos/1.jpg", S3),
    ("  s3://bucket/a b/ünï.png ", S3),
    ("data:image/png;base64,iVBORw0KGgo=", INLINE),
    ("/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJCAsICQ=", INLINE),
    ("iVBORw0KGgo+/abc==", INLINE),
    ("photos/123.jpg", PATH),
    ("my photos/front view 1.JPG", PATH),
    ("фото/кот.jpeg", PATH),
    ("123.png", PATH),
    ("../outside.jpg", PATH),
])
def test_the_value_rule(value, kind):
    assert kind_of(value) == kind


@given(st.binary(min_size=1, max_size=3000))
@settings(max_examples=200, deadline=None)
def test_no_base64_value_is_ever_taken_for_a_path_or_a_uri(payload):
    # base64's alphabet has no '.' and no ':': whatever the bytes, their base64 stays base64
    assert kind_of(base64.b64encode(payload).decode()) == INLINE


@pytest.mark.parametrize("value", ["http://example.com/a.jpg", "https://x/y.png", "file:///etc/passwd",
                                   "gs://bucket/k.jpg"])
def test_other_uris_are_refused_by_name(value):
    with pytest.raises(ImageProblem, match="URIs are not fetched; give an s3:// URI"):
        kind_of(value)


def test_references_are_named_in_reports_and_base64_is_not_echoed():
    assert describe_reference("photos/1.jpg") == "photos/1.jpg"
    assert describe_reference(" s3://b/k.png ") == "s3://b/k.png"
    assert describe_reference("QUJD" * 1000) == "(base64, 4,000 characters)"


# ---------------------------------------------------------------------------------------------- paths

@pytest.fixture
def image_dir(tmp_path):
    root = tmp_path / "images"
    (root / "my photos").mkdir(parents=True)
    (root / "my photos" / "front view.jpg").write_bytes(b"front")
    (root / "фото").mkdir()
    (root / "фото" / "кот.jpg").write_bytes(b"cat")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    return root


def test_paths_with_spaces_and_unicode_names_are_read(image_dir):
    source = ImageSource(image_dir)
    assert source.read_many(["my photos/front view.jpg", " фото/кот.jpg "]) == [b"front", b"cat"]


@pytest.mark.parametrize("value, reason", [
    ("../secret.jpg", "'..' is refused"),
    ("my photos/../../secret.jpg", "'..' is refused"),
    ("/etc/hostname.jpg", "absolute paths are refused"),
    ("C:\\photos\\a.jpg", "absolute paths are refused"),
])
def test_a_path_never_leaves_the_image_directory(image_dir, value, reason):
    with pytest.raises(ImageProblem, match=reason):
        resolve_path(image_dir, value)


def test_a_symbolic_link_out_of_the_directory_is_refused_and_one_inside_is_followed(image_dir):
    (image_dir / "escape.jpg").symlink_to(image_dir.parent / "secret.jpg")
    (image_dir / "alias.jpg").symlink_to(image_dir / "фото" / "кот.jpg")
    (image_dir / "linked").symlink_to(image_dir.parent)
    result = ImageSource(image_dir).read_many(["escape.jpg", "alias.jpg", "linked/secret.jpg"])
    assert isinstance(result[0], ImageProblem) and "leads out of the image directory" in str(result[0])
    assert result[1] == b"cat"
    assert isinstance(result[2], ImageProblem) and "leads out of the image directory" in str(result[2])


def test_missing_files_directories_and_oversized_files_are_problems_of_their_row(image_dir, monkeypatch):
    monkeypatch.setenv(core_settings.MAX_IMAGE_BYTES.name, "4")
    found = ImageSource(image_dir).read_many(["nope.jpg", "фото.d/x.jpg", "my photos/front view.jpg", "фото/кот.jpg"])
    assert "no such file in the image directory" in str(found[0])
    assert "no such file" in str(found[1])
    assert "over the limit of 4" in str(found[2]) and core_settings.MAX_IMAGE_BYTES.name in str(found[2])
    assert found[3] == b"cat"


def test_a_relative_path_without_an_image_directory_says_what_to_give(tmp_path):
    [problem] = ImageSource(None).read_many(["photos/1.jpg"])
    assert "no image directory was given" in str(problem) and "base64" in str(problem)
    with pytest.raises(DataError, match="does not exist"):
        ImageSource(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------- S3

@pytest.fixture
def bucket(s3_server, monkeypatch):
    s3_server.apply(monkeypatch)
    monkeypatch.delenv(core_settings.S3_ALLOW.name, raising=False)
    client = s3_server.client()
    name = f"images-{time.monotonic_ns()}"
    client.create_bucket(Bucket=name)
    return name, client


def test_s3_objects_are_fetched_through_the_endpoint_boto3_is_configured_with(bucket):
    name, client = bucket
    photos = {f"shop/{i} ü.jpg": photo_jpeg(150, seed=i) for i in range(40)}
    for key, data in photos.items():
        client.put_object(Bucket=name, Key=key, Body=data)
    uris = [f"s3://{name}/{key}" for key in photos]
    with ImageSource() as source:
        got = source.read_many(uris + [f"s3://{name}/shop/absent.jpg"])
    assert got[:-1] == list(photos.values())
    assert isinstance(got[-1], ImageProblem) and "no such S3 object" in str(got[-1])


def test_the_allow_list_limits_what_requests_can_make_the_container_fetch(bucket, monkeypatch):
    name, client = bucket
    client.put_object(Bucket=name, Key="public/a.jpg", Body=b"a")
    client.put_object(Bucket=name, Key="private/b.jpg", Body=b"b")
    monkeypatch.setenv(core_settings.S3_ALLOW.name, f"s3://{name}/public/, s3://other-bucket")
    with ImageSource() as source:
        allowed, refused, lookalike = source.read_many(
            [f"s3://{name}/public/a.jpg", f"s3://{name}/private/b.jpg", f"s3://{name}-evil/public/a.jpg"])
    assert allowed == b"a"
    for problem in (refused, lookalike):
        assert isinstance(problem, ImageProblem) and core_settings.S3_ALLOW.name in str(problem)


def test_a_malformed_allow_list_is_an_error_naming_the_variable():
    with pytest.raises(DataError, match=core_settings.S3_ALLOW.name):
        parse_allow_list("s3://ok/prefix, https://bucket")
    assert parse_allow_list("") is None


def test_an_object_over_the_size_limit_is_refused(bucket, monkeypatch):
    name, client = bucket
    client.put_object(Bucket=name, Key="big.jpg", Body=b"x" * 5000)
    monkeypatch.setenv(core_settings.MAX_IMAGE_BYTES.name, "1000")
    [problem] = ImageSource().read_many([f"s3://{name}/big.jpg"])
    assert "5,000 bytes, over the limit of 1,000" in str(problem)


def test_without_credentials_the_error_says_so_once(s3_server, monkeypatch, tmp_path):
    s3_server.apply(monkeypatch)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    fetcher = S3Fetcher()
    with pytest.raises(ImageAccessError, match="no AWS credentials") as info:
        fetcher.fetch_many([f"s3://b/{i}.jpg" for i in range(50)])
    assert str(info.value).count("no AWS credentials") == 1
    with pytest.raises(ImageAccessError, match="no AWS credentials"):  # later batches fail at once, the same way
        fetcher.fetch_many(["s3://b/x.jpg"])
    fetcher.close()


def test_an_unreachable_s3_says_network_isolation(s3_server, monkeypatch):
    from support import free_port
    s3_server.apply(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ImageAccessError, match="cannot reach S3.*network isolation"):
        ImageSource().read_many(["s3://b/k.jpg"])


def test_a_slow_object_times_out_instead_of_hanging(s3_server, monkeypatch):
    """An endpoint that accepts the connection and never answers: the fetch ends after the timeout, as a problem
    of that row."""
    s3_server.apply(monkeypatch)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv(core_settings.S3_TIMEOUT_SECONDS.name, "1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    try:
        started = time.monotonic()
        [problem] = ImageSource().read_many(["s3://b/slow.jpg"])
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
    assert isinstance(problem, ImageProblem) and "did not answer in time" in str(problem)
    assert elapsed < 15


def test_the_standard_retry_mode_is_used_unless_the_environment_sets_one(monkeypatch):
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert S3Fetcher()._get_client().meta.config.retries["mode"] == "standard"
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert S3Fetcher()._get_client().meta.config.retries["mode"] == "adaptive"


def test_fetches_run_concurrently(bucket):
    """S3 latency, not CPU, bounds a fetch: a batch of objects is fetched with many requests in flight."""
    name, client = bucket
    for i in range(64):
        client.put_object(Bucket=name, Key=f"c/{i}.jpg", Body=os.urandom(64))
    fetcher = S3Fetcher()
    seen, lock = set(), threading.Lock()
    original = fetcher.fetch

    def tracked(uri: str) -> bytes:
        with lock:
            seen.add(threading.get_ident())
        data = original(uri)
        time.sleep(0.05)  # S3's latency, which moto on loopback lacks
        return data

    fetcher.fetch = tracked
    fetcher.fetch_many([f"s3://{name}/c/{i}.jpg" for i in range(64)])
    fetcher.close()
    assert len(seen) >= 8
