"""WAV loading to 24 kHz mono, and the device set-up tools against the test devices."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio import counting_pcm, level_db, tone
from tests.support.pulse import PulseServer
from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.audio.setup_tools import chime, format_devices, level_dbfs, list_devices, mic_test, speaker_test
from vatel_edge.audio.wav import load_wav, save_wav
from vatel_edge.config import AudioConfig
from vatel_edge.errors import AudioDeviceError

pytestmark = pytest.mark.timeout(60)


def test_wav_24k_mono_round_trips_exactly(tmp_path: Path) -> None:
    """A 24 kHz mono WAV loads back byte for byte."""
    pcm = counting_pcm(5000)
    save_wav(tmp_path / "a.wav", pcm)
    assert load_wav(tmp_path / "a.wav") == pcm


def test_wav_48k_stereo_loads_as_24k_mono_same_length_and_pitch(tmp_path: Path) -> None:
    """A 48 kHz stereo WAV becomes 24 kHz mono of the same duration, channels averaged, pitch kept."""
    x = tone(440, 48000, 48000)
    save_wav(tmp_path / "b.wav", np.stack([x, x], axis=1).astype("<i2").tobytes(), AudioFormat(48000, 2))
    y = np.frombuffer(load_wav(tmp_path / "b.wav"), dtype="<i2")
    assert len(y) == VATEL_FORMAT.samples(1000)
    assert abs(level_db(y, 440, 24000)) < 0.5
    assert abs(int(y[-1])) < 2000  # the end is not cut off: the last sample continues the sine (near 0)


def test_wav_errors_are_audio_device_errors(tmp_path: Path) -> None:
    """Missing files and non-16-bit WAVs raise AudioDeviceError naming the file."""
    with pytest.raises(AudioDeviceError, match=r"missing\.wav"):
        load_wav(tmp_path / "missing.wav")
    import wave

    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(100))
    with pytest.raises(AudioDeviceError, match="16-bit"):
        load_wav(tmp_path / "u8.wav")


def test_list_devices_reports_native_formats(tmp_path: Path, pulse: PulseServer) -> None:
    """Listed PulseAudio devices open at 24 kHz mono; an extra 48 kHz stereo-only device shows its native format."""
    (tmp_path / "in.raw").write_bytes(bytes(100_000))
    extra = [f"f48cap:IN={tmp_path}/in.raw", "no_such_device"]
    devices = {d.name: d for d in list_devices(extra)}
    assert devices["test_mic"].capture == "24000 Hz 1 ch"
    assert devices["test_spk"].playback == "24000 Hz 1 ch"
    assert devices[extra[0]].capture == "native 48000 Hz 2 ch (resampled)"
    assert (devices["no_such_device"].capture or "").startswith("error:")
    text = format_devices(devices.values())
    assert "test_mic" in text and "native 48000 Hz 2 ch" in text


async def test_mic_test_prints_a_level_and_vad_line_per_frame(tmp_path: Path) -> None:
    """mic_test writes one line per frame with the level in dBFS and the VAD's decision."""
    (tmp_path / "in.raw").write_bytes(tone(440, 24000, 24000 * 3).astype("<i2").tobytes())
    cfg = AudioConfig(capture_device=f"fcap:IN={tmp_path}/in.raw", capture_buffer_frames=10_000)
    out = io.StringIO()
    seen: list[int] = []

    def vad(frame: bytes) -> tuple[bool, float]:
        seen.append(len(frame))
        return True, level_dbfs(frame)

    frames = await mic_test(cfg, 0.5, out, vad)
    lines = [line for line in out.getvalue().splitlines() if "dBFS" in line]
    assert frames >= 5 and len(lines) == frames == len(seen)
    assert set(seen) == {VATEL_FORMAT.nbytes(20)}
    assert all(line.endswith("voice") for line in lines)
    assert "-9.2 dBFS" in lines[0]  # sine of amplitude 16000: 20*log10(16000/sqrt(2)/32768)
    assert "device: capture" in out.getvalue()


async def test_speaker_test_plays_the_chime_to_the_sink(pulse: PulseServer) -> None:
    """speaker_test plays the chime through test_spk: the sink receives its notes."""
    rec = pulse.record_spk()
    try:
        ok = await speaker_test(AudioConfig(playback_device="test_spk"))
        await asyncio.sleep(0.5)  # PulseAudio's own latency before the monitor has it all
    finally:
        recording = rec.stop()
    assert ok
    sound = chime()
    quarter = len(sound) // 4 // VATEL_FORMAT.width * VATEL_FORMAT.width
    # PulseAudio is bit-exact once a stream runs: the middle half of the chime is in the recording unchanged
    assert sound[quarter : 3 * quarter] in recording


def test_level_dbfs() -> None:
    """Silence is -96 dBFS; a full-scale square is 0 dBFS."""
    assert level_dbfs(bytes(960)) == -96.0
    assert level_dbfs(np.array([32767, -32767] * 10, dtype="<i2").tobytes()) == pytest.approx(0.0, abs=0.01)
