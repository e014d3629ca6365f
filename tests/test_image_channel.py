"""The training job's `images` channel: paths relative to it in the CSV, checked against one listing of the channel
before anything is embedded; bad references fail the job by name, or (bad_images=missing) are listed in
output/data/bad_images.csv; Pipe mode is refused for it."""
import json
import os
import shutil

import pandas as pd
import pytest

from multimodal.sagemaker.training.imagechannel import check_references, failure
from multimodal.tools.synthetic import as_image_files, make_dataset, photo_jpeg
from test_job import FAST, assert_failed_cleanly, layout, run_job, to_csv


def _with_images_channel(root, source=None, extra: dict | None = None, mode: str = "File"):
    """Declare the images channel (content type application/x-image) next to the CSV channels ``layout`` wrote,
    holding the files of the directory ``source`` (hard links, as a download would give the same bytes) and
    ``extra`` ({relative path: bytes})."""
    config = root / "input" / "config" / "inputdataconfig.json"
    declared = json.loads(config.read_text())
    declared["images"] = {"ContentType": "application/x-image", "TrainingInputMode": mode,
                          "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    config.write_text(json.dumps(declared))
    channel = root / "input" / "data" / "images"
    if source is not None:
        shutil.copytree(source, channel, copy_function=os.link)
    for relative, data in (extra or {}).items():
        (channel / relative).parent.mkdir(parents=True, exist_ok=True)
        (channel / relative).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """1,050 training rows whose images are real-size photo files (100 KB–1 MB; 40 distinct ones) under photos/."""
    directory = tmp_path_factory.mktemp("channel")
    frame = as_image_files(make_dataset(1050, seed=41), directory)
    pool = [photo_jpeg(100 + 900 * k / 39, seed=k) for k in range(40)]
    for k, path in enumerate(p for p in frame["photo_image"] if p):
        (directory / path).write_bytes(pool[k % len(pool)])
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file()]
    assert len(sizes) > 950 and min(sizes) > 85_000
    return frame, directory


def test_the_check_lists_bad_references_and_unreferenced_files_without_opening_an_image(tmp_path):
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(b"not even an image: the check does not decode")
    (root / "a" / "2.jpg").write_bytes(b"")
    (root / "unused.png").write_bytes(b"")
    batch = pd.DataFrame({"ID": ["x", "y", "z", "w", "v"],
                          "p_image": ["a/1.jpg", "a/typo.jpg", "../../etc/passwd.jpg", "", "QUJD"],
                          "q_image": ["a/2.jpg", "a/1.jpg", "", "", ""]}, index=pd.RangeIndex(100, 105))
    check = check_references({"train": [batch]}, root)
    assert (check.files, check.referenced, check.unreferenced) == (3, 2, 1)
    assert [(b["row"], b["ID"], b["column"], b["reference"]) for b in check.bad] == [
        (102, "y", "p_image", "a/typo.jpg"), (103, "z", "p_image", "../../etc/passwd.jpg")]
    message = str(failure(check))
    assert "channel 'train', column 'p_image', row 102 (ID 'y'): 'a/typo.jpg': no such file in the 'images' channel" \
        in message
    assert "'..' is refused" in message and "bad_images=missing" in message


@pytest.mark.slow
def test_a_missing_file_fails_the_job_before_any_embedding(tmp_path, photos):
    frame, directory = photos
    broken = frame.copy()
    broken.loc[10, "photo_image"] = "photos/typo.jpg"
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": {"t.csv": to_csv(broken)}})
    job = run_job(_with_images_channel(root, directory))
    assert_failed_cleanly(job, "1 image path(s) name no file of the 'images' channel",
                          "row 11 (ID 'r41-00010'): 'photos/typo.jpg'", "nothing was embedded yet")
    assert "photo_image: embedded" not in job.stderr


@pytest.mark.slow
def test_bad_images_missing_trains_and_lists_them(tmp_path, photos):
    frame, directory = photos
    broken = frame.copy()
    broken.loc[3, "photo_image"] = "photos/typo.jpg"
    broken.loc[7, "photo_image"] = "photos/notes.jpg"
    extra = {"photos/notes.jpg": b"plain text, named like a photo", "extra/unused.jpg": photo_jpeg(100)}
    root = layout(tmp_path, hyperparameters={**FAST, "bad_images": "missing", "image_model": "efficientnet_lite0"},
                  channels={"train": {"t.csv": to_csv(broken)}})
    job = run_job(_with_images_channel(root, directory, extra, mode="FastFile"))
    assert job.returncode == 0, job.stderr[-3000:]
    listed = pd.read_csv(job.outputs / "bad_images.csv", dtype=str)
    assert list(listed.columns) == ["data", "row", "ID", "column", "reference", "reason"]
    assert listed[["row", "ID", "reference"]].values.tolist() == [["4", "r41-00003", "photos/typo.jpg"],
                                                                   ["8", "r41-00007", "photos/notes.jpg"]]
    assert "not an image" in listed["reason"][1]
    metrics = json.loads((job.outputs / "metrics.json").read_text())
    assert metrics["bad_images"] == 2
    channel = metrics["job"]["channels"]["images"]
    # the typo; notes.jpg exists (it fails when decoded); the files rows 3 and 7 named before, and extra/ are unused
    replaced = sum(bool(frame.loc[k, "photo_image"]) for k in (3, 7))
    assert channel["bad_references"] == 1 and channel["files_not_referenced"] == 1 + replaced


def test_pipe_mode_is_refused_for_the_images_channel(tmp_path):
    frame = make_dataset(20, seed=42, with_images=False)
    root = layout(tmp_path, hyperparameters=FAST, channels={"train": {"t.csv": to_csv(frame)}})
    job = run_job(_with_images_channel(root, mode="Pipe"))
    assert_failed_cleanly(job, "channel 'images' is in Pipe mode", "File or FastFile")
