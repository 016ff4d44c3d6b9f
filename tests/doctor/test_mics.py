"""The microphone part of the doctor: which ALSA names are candidates, what a recording's levels say (speech by
webrtcvad, silence, clipping, DC offset), and the channel choice of a multi-channel microphone, recorded through
real alsa-lib from the test asoundrc's 48 kHz stereo file device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vatel_edge.audio.resample import Resampler
from vatel_edge.devkit.speech import HUMAN_SPEECH, human_speech, speech_available
from vatel_edge.doctor.mics import candidates, choose, measure, measure_recording, mic_findings, record_all
from vatel_edge.doctor.report import Status

RATE = 24_000


def _speech(seconds: float = 3.0) -> np.ndarray:
    names = [n for n in HUMAN_SPEECH if speech_available(n)]
    if not names:
        pytest.skip("no recorded speech installed")
    x = np.frombuffer(b"".join(human_speech(n) for n in names), dtype="<i2")
    return x[: int(seconds * RATE)].copy()


def test_candidates_one_per_card_device_plus_named_devices() -> None:
    """A Raspberry Pi with a USB speakerphone and PipeWire: plughw per card device, the aliases dropped."""
    names = ["null", "default", "pipewire", "sysdefault", "hw:CARD=Phone,DEV=0", "plughw:CARD=Phone,DEV=0",
             "default:CARD=Phone", "sysdefault:CARD=Phone", "front:CARD=Phone,DEV=0", "dsnoop:CARD=Phone,DEV=0",
             "dsnoop:CARD=seeed2mic,DEV=0", "hw:CARD=seeed2mic,DEV=0", "surround40:CARD=seeed2mic,DEV=0",
             "usbstream:CARD=Phone", "lavrate", "speexrate", "jack", "oss", "upmix", "vdownmix"]
    assert candidates(names) == ["plughw:CARD=Phone,DEV=0", "dsnoop:CARD=seeed2mic,DEV=0", "pipewire"]
    assert candidates(["null", "default"]) == ["default"]  # nothing else: the default device
    assert candidates(["doc_mic1", "doc_mic2"]) == ["doc_mic1", "doc_mic2"]


def test_levels_of_speech_silence_clipping_and_dc() -> None:
    speech = _speech()
    heard = measure(speech, "m")
    assert heard.speech_dbfs is not None and heard.voiced_ms >= 1000 and not heard.silent
    silent = measure(np.zeros(3 * RATE, dtype=np.int16), "m")
    assert silent.silent and silent.speech_dbfs is None
    clipped = measure(np.clip(speech.astype(np.int32) * 40, -32768, 32767).astype(np.int16), "m")
    assert clipped.clipped > 0.001
    dc = measure(np.clip(speech.astype(np.int32) // 4 + 2000, -32768, 32767).astype(np.int16), "m")
    assert dc.dc_dbfs > -40.0
    noise = measure((np.random.default_rng(1).standard_normal(3 * RATE) * 300).astype(np.int16), "m")
    assert noise.speech_dbfs is None  # steady noise is not speech
    quiet = measure((speech // 8).astype(np.int16), "quiet")
    assert choose([quiet, heard, silent]) is heard
    assert choose([silent, noise]) is None


def test_a_multichannel_microphone_picks_the_channel_with_the_voice(tmp_path: Path) -> None:
    """f48cap only opens at 48 kHz stereo (like many USB microphones): speech on channel 1, hiss on channel 0."""
    speech24 = _speech(2.5)
    speech48 = Resampler(RATE, 48_000).process(speech24)
    hiss = (np.random.default_rng(2).standard_normal(speech48.size) * 20).astype(np.int16)
    stereo = np.stack([hiss, speech48], axis=1).reshape(-1)
    raw = tmp_path / "in.raw"
    raw.write_bytes(np.concatenate([stereo, np.zeros(48_000 * 2 * 2, dtype=np.int16)]).astype("<i2").tobytes())
    (rec,) = record_all([f"f48cap:IN={raw}"], 2.0)
    assert rec.error is None and rec.native is not None
    assert (rec.native.rate, rec.native.channels) == (48_000, 2)
    levels = measure_recording(rec)
    assert [m.channel for m in levels] == [0, 1]
    best = choose(levels)
    assert best is not None and best.channel == 1 and best.channels == 2
    lines = mic_findings(rec, levels)
    assert [f.status for f in lines] == [Status.OK, Status.OK]
    assert "channel 1: speech" in lines[1].text and "channel 0: no speech" in lines[0].text


def test_a_device_that_does_not_open_is_a_warning() -> None:
    (rec,) = record_all(["no_such_pcm_anywhere"], 0.5)
    (line,) = mic_findings(rec, measure_recording(rec))
    assert line.status is Status.WARN and "could not record" in line.text


def test_device_lines_fold_absent_plugins_and_name_a_busy_device() -> None:
    """With no card, ALSA's plugin names (jack, pulse, upmix...) fail with 'no such file' or 'connection
    refused': one warn line for all of them, not 'in use' advice; a busy device gets its own line saying so;
    `null` (opens anywhere, hears nothing) counts as nothing, so the no-card fail still comes."""
    from vatel_edge.audio.setup_tools import DeviceInfo
    from vatel_edge.doctor.mics import device_findings

    devices = [
        DeviceInfo("null", "24000 Hz 1 ch", "24000 Hz 1 ch"),
        DeviceInfo("jack", "error: cannot open capture device 'jack': No such file or directory", None),
        DeviceInfo("pulse", "error: Connection refused", "error: Connection refused"),
        DeviceInfo("hw:1,0", "error: cannot open capture device 'hw:1,0': Device or resource busy", None),
    ]
    lines = [(f.status, f.text, f.todo) for f in device_findings(devices)]
    texts = [t for _, t, _ in lines]
    assert any(t.startswith("2 device name(s) ALSA lists do not open: jack, pulse") for t in texts), texts
    busy = [line for line in lines if line[1].startswith("hw:1,0: does not open")]
    assert len(busy) == 1 and "in use by another program" in busy[0][2]
    assert lines[-1][0] is Status.FAIL and "no sound card" in lines[-1][1]
