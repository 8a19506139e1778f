import logging

import pytest

from mdctr.nn import native


@pytest.fixture
def fresh_load():
    """segment_lora() decides afresh in the test, and afresh again after it."""
    native.segment_lora.cache_clear()
    yield
    native.segment_lora.cache_clear()


def test_without_a_compiler_the_kernels_are_skipped_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_load: None
) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with caplog.at_level(logging.WARNING, logger="mdctr.nn.native"):
        assert native.segment_lora() is None
    assert caplog.messages == [
        "MLoRA runs without its compiled kernels (slower): no C++ compiler 'no-such-compiler-here' on PATH"
    ]


def test_mdctr_native_0_turns_the_kernels_off_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_load: None
) -> None:
    monkeypatch.setenv("MDCTR_NATIVE", "0")
    with caplog.at_level(logging.WARNING, logger="mdctr.nn.native"):
        assert native.segment_lora() is None
    assert caplog.messages == []
