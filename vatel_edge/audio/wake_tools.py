"""Wake-word tuning tools: `vatel-edge wakeword-test FILE.wav ...` and the wake-word column of `mic-test`.

Both run exactly the daemon's detector (the wake VAD, then the models while it hears a voice) on 24 kHz
frames of `audio.frame_ms`, so what they print is what the daemon would do with the same sound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TextIO

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.audio.wakeword import GatedWakeWord, open_models, wake_words_needed
from vatel_edge.config import Config
from vatel_edge.errors import AudioDeviceError


def wake_word_meter(cfg: Config) -> GatedWakeWord | None:
    """The gated detector for `mic-test` when `cfg` uses the wake word (wake.mode = "wakeword", or barge-in by
    the wake word); ConfigError if it cannot load. None otherwise: the meter shows level and VAD only."""
    if not wake_words_needed(cfg):
        return None
    cfg = replace(cfg, wake=replace(cfg.wake, mode="wakeword"))
    return GatedWakeWord.for_wake(cfg.wake, open_models(cfg), cfg.audio.frame_ms)


def wakeword_test(cfg: Config, paths: Sequence[str], out: TextIO, *, wake_words: Sequence[str] = (),
                  cutoff: float | None = None) -> int:
    """Print every detection in each WAV (time of the frame it fired on, the word, the probability), and
    for a file without one the highest probability and when; 0, or 1 when a file could not be read."""
    wake = replace(cfg.wake, mode="wakeword")
    if wake_words:
        wake = replace(wake, wake_words=tuple(wake_words))
    if cutoff is not None:
        wake = replace(wake, wake_word_cutoff=cutoff)
    cfg = replace(cfg, wake=wake)
    models = open_models(cfg)
    names = ", ".join(f"{m.spec.name} (cutoff {m.spec.cutoff:.2f})" for m in models)
    out.write(f"wake words: {names}; frames of {cfg.audio.frame_ms} ms; refractory {wake.cooldown_ms} ms\n")
    status = 0
    step = VATEL_FORMAT.nbytes(cfg.audio.frame_ms)
    for path in paths:
        from vatel_edge.audio.wav import load_wav

        try:
            pcm = load_wav(path)
        except AudioDeviceError as exc:
            out.write(f"{path}: {exc}\n")
            status = 1
            continue
        gated = GatedWakeWord.for_wake(wake, models, cfg.audio.frame_ms)
        found = 0
        best, best_t = 0.0, 0.0
        for k, i in enumerate(range(0, len(pcm) - step + 1, step)):
            _voiced, _level, r = gated.process(pcm[i : i + step])
            t = (k + 1) * cfg.audio.frame_ms / 1000.0
            if r.probability > best:
                best, best_t = r.probability, t
            if r.word is not None:
                found += 1
                out.write(f"{path}: {t:8.2f} s  {r.word}  (probability {r.probability:.2f})\n")
        gated.reset()
        if not found:
            seconds = VATEL_FORMAT.duration_ms(len(pcm)) / 1000.0
            out.write(f"{path}: no wake word in {seconds:.2f} s (highest probability {best:.2f} at {best_t:.2f} s)\n")
        out.flush()
    for m in models:
        m.close()
    return status
