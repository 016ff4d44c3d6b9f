"""The wake-word detector (audio/wakeword.py) and its config checks, offline: espeak-ng speech generated here.

The models are the ones pymicro-wakeword ships; the audio is 24 kHz frames as the capture delivers them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from vatel_edge.audio.wakeword import (
    BUILTIN_MODELS,
    GatedWakeWord,
    WakeWordDetector,
    check_wake_words,
    load_models,
    open_models,
    resolve_models,
    scan,
    wakeword_installed,
)
from vatel_edge.config import WakeConfig, loads_config
from vatel_edge.devkit import wake_lab as lab
from vatel_edge.errors import ConfigError

pytestmark = [
    pytest.mark.skipif(not wakeword_installed(), reason="the wakeword extra (pymicro-wakeword) is not installed"),
    pytest.mark.skipif(not lab.espeak_available(), reason="espeak-ng is not installed"),
]
FRAME_MS = 20
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def config(wake: str = "", session: str = "", path: Path | None = None) -> object:
    text = f'[vatel]\nagent_id = "{AGENT}"\n[wake]\nmode = "wakeword"\n{wake}\n[session]\n{session}\n'
    return loads_config(text, str(path) if path else None)


def gated(wake: WakeConfig | None = None) -> GatedWakeWord:
    wake = wake or WakeConfig(mode="wakeword")
    return GatedWakeWord.for_wake(wake, load_models(resolve_models(wake)), FRAME_MS)


def detections(pcm: bytes, wake: WakeConfig | None = None) -> list[tuple[str, float]]:
    return [(d.word, d.t_s) for d in scan(gated(wake), pcm, FRAME_MS)]


def test_the_wake_word_and_a_command_is_detected_once_just_after_the_word() -> None:
    """'okay nabu, turn on the kitchen light' (two voices): one detection, after the wake word's sound and
    before the end of the command."""
    for voice in ("en-us", "en-gb"):
        word = lab.say("okay nabu", voice)
        pcm = lab.silence(1000) + lab.say("okay nabu, turn on the kitchen light", voice) + lab.silence(1000)
        found = detections(pcm)
        assert [w for w, _ in found] == ["Okay Nabu"], voice
        word_end_s = 1.0 + lab.FMT.duration_ms(len(word)) / 1000
        assert word_end_s - 0.3 <= found[0][1] <= word_end_s + 1.0, (voice, found)


def test_speech_without_the_wake_word_is_not_detected() -> None:
    """Ordinary sentences (several voices) give no detection."""
    texts = ["the weather is nice today, let us go for a walk", "okay, now put the bread in the oven",
             "I will call you back in a minute"]
    for voice in ("en-us", "en-gb", "en-us+m3"):
        for text in texts:
            assert detections(lab.silence(500) + lab.say(text, voice) + lab.silence(500)) == [], (voice, text)


def test_the_models_run_only_while_the_vad_hears_a_voice() -> None:
    """Silence and quiet noise (below the energy gate) run no model step; speech does, and the models stop
    again a hangover after it."""
    g = gated()
    rng = np.random.default_rng(1)
    noise = np.clip(rng.normal(0, 32768 * 10 ** (-60 / 20), lab.FMT.samples(3000)), -32768, 32767)
    list(scan(g, lab.silence(2000) + noise.astype("<i2").tobytes(), FRAME_MS))
    assert g.detector.steps == 0
    list(scan(g, lab.say("the weather is nice today", "en-us") + lab.silence(1500), FRAME_MS))
    assert g.detector.steps > 0
    assert not g.detector.running


def test_cooldown_is_the_refractory_time_between_detections() -> None:
    """Two wake words 0.6 s apart: one detection with cooldown_ms = 3000, two with cooldown_ms = 0."""
    word = lab.say("okay nabu", "en-us")
    pcm = lab.silence(800) + word + lab.silence(600) + word + lab.silence(1000)
    assert len(detections(pcm, WakeConfig(mode="wakeword", cooldown_ms=3000))) == 1
    assert len(detections(pcm, WakeConfig(mode="wakeword", cooldown_ms=0))) == 2


def test_several_wake_words_at_once() -> None:
    """wake_words = ["okay_nabu", "alexa"]: each is detected and named."""
    wake = WakeConfig(mode="wakeword", wake_words=("okay_nabu", "alexa"))
    pcm = (lab.silence(800) + lab.say("alexa, what time is it", "en-us") + lab.silence(1500)
           + lab.say("okay nabu", "en-us") + lab.silence(1000))
    assert [w for w, _ in detections(pcm, wake)] == ["Alexa", "Okay Nabu"]


def test_a_high_cutoff_trades_detections_for_false_wakes() -> None:
    """wake_word_cutoff = 0.99 overrides the model's own cutoff (0.85): this wake word no longer passes."""
    pcm = lab.silence(800) + lab.say("okay nabu", "en-gb") + lab.silence(1000)
    assert len(detections(pcm)) == 1
    assert detections(pcm, WakeConfig(mode="wakeword", wake_word_cutoff=0.99)) == []
    assert [m.spec.cutoff for m in gated(WakeConfig(mode="wakeword", wake_word_cutoff=0.5)).detector.models] == [0.5]


def test_a_detector_reset_forgets_a_half_heard_word() -> None:
    """reset() between the two halves of the word: nothing is detected."""
    g = gated()
    pcm = lab.say("okay nabu", "en-us")
    half = len(pcm) // 2 // 960 * 960
    list(scan(g, lab.silence(500) + pcm[:half], FRAME_MS))
    g.reset()
    assert list(scan(g, pcm[half:] + lab.silence(1000), FRAME_MS)) == []


# ---------------------------------------------------------------------------------------- configuration


def copy_model(tmp_path: Path, name: str = "okay_nabu") -> Path:
    src = resolve_models(WakeConfig(wake_words=(name,)))[0]
    shutil.copy(src.tflite, tmp_path / src.tflite.name)
    manifest = tmp_path / src.manifest.name
    shutil.copy(src.manifest, manifest)
    return manifest


def test_a_model_of_your_own_by_path_relative_to_the_config_file(tmp_path: Path) -> None:
    """A manifest path relative to the config file's directory loads, with its phrase and cutoff."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    copy_model(models_dir)
    cfg = config('wake_words = ["models/okay_nabu.json"]', path=tmp_path / "config.toml")
    models = open_models(cfg)  # type: ignore[arg-type]
    assert [m.spec.name for m in models] == ["Okay Nabu"]
    assert models[0].spec.manifest == models_dir / "okay_nabu.json"


def test_bad_values_name_the_key() -> None:
    """The schema refuses a string for the array, an empty name and a cutoff out of range."""
    with pytest.raises(ConfigError) as e:
        config('wake_words = "okay_nabu"\nwake_word_cutoff = 1.5')
    assert e.value.problems == ['wake.wake_words: expected an array of strings, got "okay_nabu"',
                                "wake.wake_word_cutoff: expected a number 0.01..0.99, got 1.5"]
    with pytest.raises(ConfigError) as e:
        config('wake_words = ["okay_nabu", ""]')
    assert e.value.problems == ['wake.wake_words[1]: expected a non-empty string, got ""']


def test_an_unknown_name_suggests_a_builtin_and_an_empty_list_is_refused() -> None:
    assert check_wake_words(config('wake_words = ["okay_nabo"]')) == [  # type: ignore[arg-type]
        f"wake.wake_words[0]: 'okay_nabo' is neither a built-in wake word ({', '.join(BUILTIN_MODELS)}) nor a "
        'path to a microWakeWord .json manifest (did you mean "okay_nabu"?)']
    assert check_wake_words(config("wake_words = []")) == [  # type: ignore[arg-type]
        'wake.wake_words: at least one wake word is needed (e.g. ["okay_nabu"])']


def test_missing_and_broken_model_files_name_the_key_and_the_file(tmp_path: Path) -> None:
    """A missing manifest, a manifest that is not JSON, one without its .tflite, and .tflite files that are
    random bytes or cut short: each is one problem naming wake.wake_words[i] and the file; nothing crashes
    (the TFLite runtime would segfault on the corrupt ones if handed them unchecked)."""
    manifest = copy_model(tmp_path)
    doc = json.loads(manifest.read_text())
    (tmp_path / "notjson.json").write_text("{ not json")
    (tmp_path / "lonely.json").write_text(json.dumps({**doc, "model": "absent.tflite"}))
    (tmp_path / "random.tflite").write_bytes(os.urandom(3000))
    (tmp_path / "random.json").write_text(json.dumps({**doc, "model": "random.tflite"}))
    (tmp_path / "cut.tflite").write_bytes((tmp_path / "okay_nabu.tflite").read_bytes()[:20000])
    (tmp_path / "cut.json").write_text(json.dumps({**doc, "model": "cut.tflite"}))
    (tmp_path / "nomicro.json").write_text(json.dumps({"model": "okay_nabu.tflite"}))
    names = ["missing.json", "notjson.json", "lonely.json", "random.json", "cut.json", "nomicro.json"]
    entries = ", ".join(f'"{tmp_path / n}"' for n in names)
    problems = check_wake_words(config(f"wake_words = [{entries}]"))  # type: ignore[arg-type]
    assert len(problems) == len(names), problems
    for i, problem in enumerate(problems):
        assert problem.startswith(f"wake.wake_words[{i}]: "), problem
    assert f"no such wake-word manifest {tmp_path / 'missing.json'}" in problems[0]
    assert f"{tmp_path / 'notjson.json'} is not a JSON manifest" in problems[1]
    assert f"the model {tmp_path / 'absent.tflite'} named by {tmp_path / 'lonely.json'} does not exist" in problems[2]
    assert f"{tmp_path / 'random.tflite'} is not a valid TensorFlow Lite model" in problems[3]
    assert f"{tmp_path / 'cut.tflite'} is not a valid TensorFlow Lite model" in problems[4]
    assert "is not a microWakeWord manifest" in problems[5]


def test_without_the_extra_wakeword_mode_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """pymicro-wakeword not importable: wake.mode = "wakeword" and session.barge_in = "wakeword" each say
    which extra to install and how; barge_in = "both" falls back to the VAD alone (no error)."""
    monkeypatch.setitem(sys.modules, "pymicro_wakeword", None)  # import raises ImportError
    assert not wakeword_installed()
    need = ("needs the optional extra 'wakeword' (pymicro-wakeword), which is not installed: "
            "pip install 'vatel-edge[wakeword]'")
    [problem] = check_wake_words(config())  # type: ignore[arg-type]
    assert problem.startswith("wake.mode = 'wakeword' " + need)
    cfg = loads_config(f'[vatel]\nagent_id = "{AGENT}"\n[session]\nbarge_in = "wakeword"\n')
    [problem] = check_wake_words(cfg)
    assert problem.startswith("session.barge_in = 'wakeword' " + need)
    assert check_wake_words(loads_config(f'[vatel]\nagent_id = "{AGENT}"\n[session]\nbarge_in = "both"\n')) == []


def test_detector_needs_a_model() -> None:
    with pytest.raises(ValueError):
        WakeWordDetector([], refractory_ms=0, frame_ms=FRAME_MS)
