"""The accuracy benchmark runs every trained fixture."""
from benchmarks import accuracy
from trtqat.demo import trained


def test_every_trained_fixture_is_a_family():
    assert accuracy.FAMILIES == trained.TRAINED_FAMILIES and "yolov8" in accuracy.FAMILIES
