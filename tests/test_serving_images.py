"""/invocations with images as files (MULTIMODAL_IMAGE_DIR) and as s3:// URIs (a real S3 API on loopback): the
same answers as base64; every bad reference is a 400 (or an ERROR record in emit mode) naming it, never a 5xx."""
import json

import numpy as np
import pytest

from multimodal.core import settings
from multimodal.sagemaker.serving.app import ServerSettings, create_app
from multimodal.tools.synthetic import as_image_files
from support import csv_body
from test_app import csv_lines, post, records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_model(serving_model_dir):
    from multimodal import MultimodalClassifier
    return MultimodalClassifier.load(serving_model_dir)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("served-images")
    frame = records(12, seed=51, missing_rate=0)
    return root, frame, as_image_files(frame, root)


def _probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.get_data(as_text=True)
    return np.array([list(o["probabilities"].values()) for o in json.loads(response.data)])


def test_files_under_the_image_directory_answer_as_base64_does(real_model, frames):
    root, frame, files = frames
    client = create_app(real_model, settings=ServerSettings(image_dir=root), background=False).test_client()
    inline = _probabilities(post(client, csv_body(frame), accept="application/json"))
    from_files = _probabilities(post(client, csv_body(files), accept="application/json"))
    np.testing.assert_allclose(from_files, inline, atol=1e-6)


def test_a_relative_path_without_an_image_directory_is_a_400_saying_what_to_send(real_model, frames):
    _, _, files = frames
    response = post(create_app(real_model, background=False).test_client(), csv_body(files))
    assert response.status_code == 400
    assert "MULTIMODAL_IMAGE_DIR" in response.get_data(as_text=True) and "base64" in response.get_data(as_text=True)


def test_bad_paths_are_bad_records_naming_the_path(real_model, frames):
    root, _, files = frames
    bad = files.copy()
    bad.loc[1, "photo_image"] = "photos/absent.jpg"
    bad.loc[3, "photo_image"] = "../outside.jpg"
    client = create_app(real_model, settings=ServerSettings(image_dir=root, bad_records="emit"),
                        background=False).test_client()
    out = csv_lines(post(client, csv_body(bad)))
    assert out[1][1].startswith("ERROR: ") and "'photos/absent.jpg': no such file" in out[1][1]
    assert out[3][1].startswith("ERROR: ") and "'..' is refused" in out[3][1]
    assert all(not line[1].startswith("ERROR") for k, line in enumerate(out) if k not in (1, 3))
    strict = create_app(real_model, settings=ServerSettings(image_dir=root), background=False).test_client()
    response = post(strict, csv_body(bad))  # '..' is refused before anything is read
    assert response.status_code == 400 and "line 4, column 'photo_image': '..' is refused" in response.get_data(
        as_text=True)
    response = post(strict, csv_body(bad.drop(index=3)))  # the absent file is found when the images are read
    assert response.status_code == 400 and "line 2, column 'photo_image'" in response.get_data(as_text=True)
    assert "'photos/absent.jpg': no such file" in response.get_data(as_text=True)


def test_s3_uris_answer_as_base64_and_bad_objects_are_400s_naming_the_uri(real_model, frames, s3_server,
                                                                          monkeypatch):
    root, frame, files = frames
    s3_server.apply(monkeypatch)
    client_s3 = s3_server.client()
    client_s3.create_bucket(Bucket="served")
    uris = files.copy()
    for k, path in uris["photo_image"].items():
        client_s3.put_object(Bucket="served", Key=f"in/{path}", Body=(root / path).read_bytes())
        uris.loc[k, "photo_image"] = f"s3://served/in/{path}"
    client = create_app(real_model, background=False).test_client()
    inline = _probabilities(post(client, csv_body(frame), accept="application/json"))
    np.testing.assert_allclose(_probabilities(post(client, csv_body(uris), accept="application/json")), inline,
                               atol=1e-6)

    missing = uris.copy()
    missing.loc[2, "photo_image"] = "s3://served/in/photos/nothing.jpg"
    response = post(client, csv_body(missing))
    assert response.status_code == 400
    assert "s3://served/in/photos/nothing.jpg" in response.get_data(as_text=True)
    assert "no such S3 object" in response.get_data(as_text=True)

    monkeypatch.setenv(settings.S3_ALLOW.name, "s3://served/other/")
    response = post(client, csv_body(uris.head(2)))
    assert response.status_code == 400 and settings.S3_ALLOW.name in response.get_data(as_text=True)


def test_unreachable_s3_is_one_400_for_the_request(real_model, frames, s3_server, monkeypatch):
    from support import free_port
    _, _, files = frames
    s3_server.apply(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    uris = files.assign(photo_image=[f"s3://b/{p}" for p in files["photo_image"]])
    client = create_app(real_model, settings=ServerSettings(bad_records="emit"), background=False).test_client()
    response = post(client, csv_body(uris))
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and "cannot reach S3" in text and text.count("cannot reach S3") == 1
