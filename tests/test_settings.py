"""Environment variables: each declared once with its default, type and error (multimodal.core.settings,
multimodal.sagemaker.environment)."""
from pathlib import Path

import pytest

from multimodal.core import settings
from multimodal.core.settings import SettingError
from multimodal.sagemaker import environment


@pytest.mark.parametrize("setting", settings.CORE_SETTINGS + environment.TRAINING_SETTINGS, ids=lambda s: s.name)
def test_unset_or_blank_means_the_default(setting):
    assert setting.read({}) == setting.default
    assert setting.read({setting.name: "  "}) == setting.default


@pytest.mark.parametrize("setting, raw, expected", [
    (settings.MAX_IMAGE_PIXELS, "10000", 10000), (settings.S3_TIMEOUT_SECONDS, "2.5", 2.5),
    (settings.WEIGHTS_DIR, "/w", Path("/w")), (environment.HOSTS_PORT, "8123", 8123),
    (environment.HOSTS_ADDRESSES, '{"algo-1": "127.0.0.1"}', {"algo-1": "127.0.0.1"}),
    (environment.NODE_CPUS, "3", 3), (environment.CHECKPOINTS, "/mnt/ckpt", Path("/mnt/ckpt")),
    (environment.CHECKPOINTS, "OFF", "off"),
], ids=lambda v: getattr(v, "name", None))
def test_a_value_is_read_with_its_type(setting, raw, expected):
    assert setting.read({setting.name: raw}) == expected


@pytest.mark.parametrize("setting, raw, must", [
    (settings.MAX_IMAGE_PIXELS, "lots", "whole number"), (settings.MAX_IMAGE_BYTES, "0", "at least 1"),
    (settings.S3_TIMEOUT_SECONDS, "-1", "positive number"), (settings.S3_TIMEOUT_SECONDS, "inf", "positive number"),
    (environment.HOSTS_PORT, "70000", "between 1 and 65535"), (environment.NODE_CPUS, "1.5", "whole number"),
    (environment.HOSTS_ADDRESSES, "algo-1=127.0.0.1", "JSON object"),
], ids=lambda v: getattr(v, "name", None))
def test_a_bad_value_names_the_variable_what_it_must_be_and_the_default(setting, raw, must):
    with pytest.raises(SettingError) as error:
        setting.read({setting.name: raw})
    message = str(error.value)
    assert message.startswith(setting.name) and must in message and repr(raw) in message and "default" in message


def test_the_variables_are_read_at_each_use(monkeypatch):
    """No caching: a test (or a long-lived process) that changes the environment sees the change."""
    monkeypatch.setenv(settings.MAX_IMAGE_PIXELS.name, "7")
    assert settings.MAX_IMAGE_PIXELS.read() == 7
    monkeypatch.setenv(settings.MAX_IMAGE_PIXELS.name, "8")
    assert settings.MAX_IMAGE_PIXELS.read() == 8


def test_every_variable_is_declared_once():
    names = [s.name for s in settings.CORE_SETTINGS + environment.TRAINING_SETTINGS]
    assert len(names) == len(set(names))
