"""make_echo_canceller / available_engines: choosing, naming and refusing engines."""

from __future__ import annotations

import sys

import pytest

from tests.support.aec import FMT, FRAME_MS, engine_params
from vatel_edge.audio import aec, aec_speex
from vatel_edge.errors import ConfigError


def test_off_gives_no_canceller() -> None:
    """audio.echo_cancel = off means no engine at all."""
    assert aec.make_echo_canceller("off", FRAME_MS) is None


def test_auto_picks_the_best_installed_engine() -> None:
    """auto builds the first engine of available_engines() (best first), or None when none is installed."""
    installed = aec.available_engines()
    assert installed == [k for k in aec.ENGINES if k in installed]
    engine = aec.make_echo_canceller("auto", FRAME_MS)
    if not installed:
        assert engine is None
    else:
        assert engine is not None and engine.name == installed[0]
        engine.close()


def test_an_engine_is_installed() -> None:
    """The project's set-up installs at least one echo canceller (otherwise every engine test is skipped)."""
    assert aec.available_engines(), "no echo canceller installed: see docs/ECHO.md (vatel-edge[aec] extra)"


def test_unknown_engine_is_a_config_error() -> None:
    """A name outside the known engines is refused with the config key in the message."""
    with pytest.raises(ConfigError, match=r"audio\.echo_cancel"):
        aec.make_echo_canceller("magic", FRAME_MS)


def test_missing_webrtc_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pywebrtc_audio unimportable, echo_cancel=webrtc names the key and the package to install."""
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import now raises ImportError
    assert "webrtc" not in aec.available_engines()
    with pytest.raises(ConfigError, match=r"audio\.echo_cancel = 'webrtc'.*pywebrtc-audio"):
        aec.make_echo_canceller("webrtc", FRAME_MS)


def test_missing_speex_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With libspeexdsp not loadable, echo_cancel=speex names the key and the Debian package."""
    monkeypatch.setattr(aec_speex, "_LIBRARY", "libspeexdsp-not-here.so.1")
    monkeypatch.setattr(aec_speex, "_lib", None)
    assert "speex" not in aec.available_engines()
    with pytest.raises(ConfigError, match=r"audio\.echo_cancel = 'speex'.*libspeexdsp1"):
        aec.make_echo_canceller("speex", FRAME_MS)


@pytest.mark.parametrize("kind", engine_params())
@pytest.mark.parametrize("frame_ms", [10, 20, 30, 40])
def test_engine_keeps_frame_length(kind: str, frame_ms: int) -> None:
    """Every engine returns exactly one frame per frame for each allowed audio.frame_ms."""
    engine = aec.make_echo_canceller(kind, frame_ms)
    assert engine is not None and engine.name == kind
    nbytes = FMT.nbytes(frame_ms)
    for _ in range(5):
        assert len(engine.process(bytes(nbytes), bytes(nbytes))) == nbytes
    engine.reset()
    assert len(engine.process(bytes(nbytes), bytes(nbytes))) == nbytes
    engine.close()
    engine.close()  # idempotent


@pytest.mark.parametrize("kind", engine_params())
def test_engine_rejects_wrong_frame_length(kind: str) -> None:
    """A frame of the wrong length is a ValueError, not a crash in C."""
    engine = aec.make_echo_canceller(kind, FRAME_MS)
    assert engine is not None
    nbytes = FMT.nbytes(FRAME_MS)
    with pytest.raises(ValueError, match="frames"):
        engine.process(bytes(nbytes), bytes(nbytes - 2))
    engine.close()
