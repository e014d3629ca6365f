"""Images as files and S3 objects through the estimator: fitting and predicting with an image directory or s3://
URIs gives what the same images in base64 give; a bad reference fails the fit by name, or with
bad_images=missing counts as a missing image and is listed."""
import base64

import numpy as np
import pytest

from multimodal import MultimodalClassifier
from multimodal.core.errors import DataError
from multimodal.tools.synthetic import as_image_files, make_dataset

SMALL = {"quality": "toy", "image_model": "efficientnet_lite0", "n_mins": 0, "n_secs": 40, "n_folds": 2,
         "n_epochs": 30, "patience": 5}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    train, test = make_dataset(120, seed=31), make_dataset(40, seed=32)
    return root, train, test, as_image_files(train, root), as_image_files(test, root)


def test_the_files_are_laid_out_as_an_images_channel(frames):
    root, train, _, train_files, _ = frames
    present = train["photo_image"] != ""
    assert train_files.loc[present, "photo_image"].str.match(r"^photos/r31-\d{5}-photo_image\.jpg$").all()
    assert (train_files.loc[~present, "photo_image"] == "").all()
    first = train_files.loc[present, "photo_image"].iloc[0]
    assert (root / first).read_bytes() == base64.b64decode(train.loc[present, "photo_image"].iloc[0])


def test_a_missing_file_fails_the_fit_naming_column_row_and_path(frames):
    root, _, _, train_files, _ = frames
    broken = train_files.copy()
    broken.loc[5, "photo_image"] = "photos/typo.jpg"
    with pytest.raises(DataError, match=r"column 'photo_image', row 6 \(ID 'r31-00005'\): 'photos/typo.jpg': no such "
                                        "file in the image directory"):
        MultimodalClassifier(**SMALL).fit(broken, images=root)


def test_relative_paths_need_the_image_directory(frames):
    _, _, _, train_files, _ = frames
    with pytest.raises(DataError, match="no image directory was given"):
        MultimodalClassifier(**SMALL).fit(train_files)


@pytest.mark.slow
def test_files_and_s3_objects_train_and_predict_as_base64_does_and_bad_ones_can_count_as_missing(
        frames, s3_server, monkeypatch):
    root, _, test, train_files, test_files = frames
    s3_server.apply(monkeypatch)
    client = s3_server.client()
    client.create_bucket(Bucket="shop")

    def to_s3(frame, rows):
        out = frame.copy()
        for position in rows:
            path = out.loc[position, "photo_image"]
            if path:
                client.put_object(Bucket="shop", Key=f"catalogue/{path}", Body=(root / path).read_bytes())
                out.loc[position, "photo_image"] = f"s3://shop/catalogue/{path}"
        return out

    # training rows: the first half's images as S3 objects, the rest as files; four bad references
    mixed = to_s3(train_files, range(60))
    (root / "photos" / "notes.jpg").write_text("a text file with an image's name")
    mixed.loc[3, "photo_image"] = "s3://shop/catalogue/photos/absent.jpg"
    mixed.loc[7, "photo_image"] = "photos/notes.jpg"
    mixed.loc[70, "photo_image"] = "photos/typo.jpg"
    mixed.loc[71, "photo_image"] = "https://example.com/a.jpg"
    model = MultimodalClassifier(**SMALL, bad_images="missing").fit(mixed, images=root)

    assert [(b["row"], b["ID"], b["column"], b["reference"]) for b in model.bad_images_] == [
        (4, "r31-00003", "photo_image", "s3://shop/catalogue/photos/absent.jpg"),
        (8, "r31-00007", "photo_image", "photos/notes.jpg"),
        (71, "r31-00070", "photo_image", "photos/typo.jpg"),
        (72, "r31-00071", "photo_image", "https://example.com/a.jpg")]
    reasons = [b["reason"] for b in model.bad_images_]
    assert "no such S3 object" in reasons[0] and "not an image" in reasons[1] and "no such file" in reasons[2]
    assert "URIs are not fetched" in reasons[3]
    assert model.metrics_["bad_images"] == 4

    features = test.drop(columns="label")
    expected = model.predict_proba(features).to_numpy()
    from_files = model.predict_proba(test_files.drop(columns="label"), images=root).to_numpy()
    np.testing.assert_allclose(from_files, expected, atol=1e-6)
    from_s3 = model.predict_proba(to_s3(test_files, test_files.index).drop(columns="label")).to_numpy()
    np.testing.assert_allclose(from_s3, expected, atol=1e-6)
