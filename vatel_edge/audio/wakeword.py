"""Wake-word spotting (wake.mode = "wakeword", session.barge_in = "wakeword"): microWakeWord behind the VAD.

webrtcvad stays the first, cheap stage: the models (pymicro-wakeword, the optional extra `wakeword`) run
only while a voiced stretch lasts. When the VAD marks the first voiced frame after quiet, the detector
starts fresh on the last `LEAD_MS` of audio (kept here, so the first sound of the word is never missed)
and keeps running until `HANGOVER_MS` after the last voiced frame (a model decides shortly after the word
ends); then it stops and its models are reset. Audio is resampled 24 -> 16 kHz by soxr (part of the extra:
~11 us per 20 ms frame here, the project's numpy polyphase resampler ~180 us) and cut into the 10 ms steps
the models take; the features are computed once and shared by every model.

Loading is checked before the TFLite runtime sees a file: a corrupt .tflite crashes the process inside
the runtime (seen with pymicro-wakeword 2.5.0: a segmentation fault), so the model is first opened through
the runtime's C API with every pointer checked, and a failure is a ConfigError naming the key and file.
"""

from __future__ import annotations

import ctypes
import difflib
import json
import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat, level_dbfs
from vatel_edge.audio.vad import VadParams, VoiceDetector
from vatel_edge.config import Config, WakeConfig
from vatel_edge.errors import ConfigError

log = logging.getLogger(__name__)

EXTRA = "wakeword"
INSTALL_COMMAND = "pip install 'vatel-edge[wakeword]'"
#: The models' input: 16 kHz PCM16 mono in 10 ms steps.
MODEL_FORMAT = AudioFormat(rate=16_000)
STEP_MS = 10
#: Audio from before the first voiced frame fed to the models when a voiced stretch starts.
LEAD_MS = 1000
#: The models keep running this long after the last voiced frame.
HANGOVER_MS = 700
#: The models pymicro-wakeword ships (its `Model` enum); named here so a config check needs no import.
BUILTIN_MODELS = ("okay_nabu", "hey_jarvis", "alexa", "hey_mycroft")


def wakeword_installed() -> bool:
    """Whether the `wakeword` extra (pymicro-wakeword) can be imported."""
    try:
        import pymicro_wakeword  # noqa: F401
    except ImportError:
        return False
    return True


def _missing_extra(key: str, value: str) -> str:
    return (f"{key} = {value!r} needs the optional extra {EXTRA!r} (pymicro-wakeword), which is not installed: "
            f"{INSTALL_COMMAND} (in the daemon's venv; scripts/install.sh installs every extra)")


def barge_in_by_wake_word(cfg: Config) -> bool:
    """session.barge_in says the wake word cuts the agent: "wakeword", or "both" with the extra installed."""
    b = cfg.session.barge_in
    return b == "wakeword" or (b == "both" and wakeword_installed())


def wake_words_needed(cfg: Config) -> bool:
    """Whether this config runs wake-word models (the wake, or barge-in by wake word)."""
    return cfg.wake.mode == "wakeword" or barge_in_by_wake_word(cfg)


@dataclass(frozen=True)
class ModelSpec:
    """One configured wake word: its manifest, its .tflite and the decision rule."""

    key: str  # "wake.wake_words[0]": what an error names
    name: str  # the manifest's wake_word phrase ("Okay Nabu")
    manifest: Path
    tflite: Path
    cutoff: float  # wake.wake_word_cutoff, else the manifest's probability_cutoff
    window: int  # probabilities averaged (the manifest's sliding_window_size)


def _builtin_dir() -> Path:
    import pymicro_wakeword

    return Path(pymicro_wakeword.__file__).parent / "models"


def _tflite_library() -> Path:
    """The TFLite C runtime inside the pymicro-wakeword wheel."""
    lib = next(iter((Path(_builtin_dir().parent) / "lib").glob("*tensorflowlite_c.*")), None)
    if lib is None:
        raise ConfigError("wake.wake_words: the pymicro-wakeword install has no TensorFlow Lite runtime "
                          f"(lib/*tensorflowlite_c.*); reinstall it: {INSTALL_COMMAND}")
    return lib


def _manifest_path(key: str, entry: str, base_dir: Path | None) -> Path:
    if entry in BUILTIN_MODELS:
        return _builtin_dir() / f"{entry}.json"
    if "/" not in entry and not entry.endswith(".json"):
        hint = difflib.get_close_matches(entry, BUILTIN_MODELS, n=1, cutoff=0.6)
        did = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(f"{key}: {entry!r} is neither a built-in wake word ({', '.join(BUILTIN_MODELS)}) nor a "
                          f"path to a microWakeWord .json manifest{did}")
    p = Path(entry).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _read_manifest(key: str, manifest: Path, cutoff: float | None) -> ModelSpec:
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{key}: no such wake-word manifest {manifest}") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {manifest}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{key}: {manifest} is not a JSON manifest ({exc})") from None
    micro = doc.get("micro") if isinstance(doc, dict) else None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(micro, dict) or not isinstance(model, str) or not model:
        raise ConfigError(f'{key}: {manifest} is not a microWakeWord manifest (needs "model" and a "micro" table)')
    prob, window = micro.get("probability_cutoff"), micro.get("sliding_window_size")
    if not isinstance(prob, (int, float)) or isinstance(prob, bool) or not 0 < prob <= 1:
        raise ConfigError(f"{key}: {manifest}: micro.probability_cutoff must be a number in (0, 1], got {prob!r}")
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 100:
        raise ConfigError(f"{key}: {manifest}: micro.sliding_window_size must be an integer 1..100, got {window!r}")
    tflite = manifest.parent / model
    if not tflite.is_file():
        raise ConfigError(f"{key}: the model {tflite} named by {manifest} does not exist")
    name = doc.get("wake_word")
    return ModelSpec(key, str(name) if isinstance(name, str) and name else tflite.stem, manifest, tflite,
                     float(prob) if cutoff is None else cutoff, window)


def resolve_models(wake: WakeConfig, base_dir: Path | None = None) -> list[ModelSpec]:
    """The configured wake words as ModelSpecs; ConfigError lists every bad entry (key and file named).

    Relative manifest paths are read from `base_dir` (the config file's directory)."""
    specs, problems = _resolve(wake, base_dir)
    if problems:
        raise ConfigError(problems)
    return specs


def _resolve(wake: WakeConfig, base_dir: Path | None) -> tuple[list[ModelSpec], list[str]]:
    problems: list[str] = []
    specs: list[ModelSpec] = []
    if not wake.wake_words:
        return [], ["wake.wake_words: at least one wake word is needed (e.g. [\"okay_nabu\"])"]
    for i, entry in enumerate(wake.wake_words):
        key = f"wake.wake_words[{i}]"
        try:
            specs.append(_read_manifest(key, _manifest_path(key, entry, base_dir), wake.wake_word_cutoff))
        except ConfigError as exc:
            problems.extend(exc.problems)
    return specs, problems


def _probe_tflite(spec: ModelSpec, lib: Any) -> None:
    """Open the model through the TFLite C API, checking every pointer (a bad file would crash the loader)."""
    model = lib.TfLiteModelCreateFromFile(str(spec.tflite.resolve()).encode())
    if not model:
        raise ConfigError(f"{spec.key}: {spec.tflite} is not a valid TensorFlow Lite model")
    interp = None
    try:
        interp = lib.TfLiteInterpreterCreate(model, None)
        if not interp or lib.TfLiteInterpreterAllocateTensors(interp) != 0:
            raise ConfigError(f"{spec.key}: {spec.tflite} cannot run in the TensorFlow Lite runtime")
        lib.TfLiteInterpreterGetInputTensorCount.restype = ctypes.c_int32
        lib.TfLiteInterpreterGetInputTensorCount.argtypes = [ctypes.c_void_p]
        if lib.TfLiteInterpreterGetInputTensorCount(interp) < 1:
            raise ConfigError(f"{spec.key}: {spec.tflite} has no input tensor: not a microWakeWord model")
        tensor = lib.TfLiteInterpreterGetInputTensor(interp, 0)
        if lib.TfLiteTensorNumDims(tensor) != 3 or lib.TfLiteTensorType(tensor) not in (3, 9):
            raise ConfigError(f"{spec.key}: {spec.tflite} is not a streaming microWakeWord model "
                              "(expected a quantized [1, stride, 40] input)")
    finally:
        if interp:
            lib.TfLiteInterpreterDelete(interp)
        lib.TfLiteModelDelete(model)


class WakeWordModel:
    """One loaded microWakeWord model: features in, the sliding mean of its probabilities out."""

    def __init__(self, spec: ModelSpec, lib_path: Path) -> None:
        from pymicro_wakeword import MicroWakeWord

        self.spec = spec
        self._mww = MicroWakeWord(
            spec.tflite.stem, wake_word=spec.name, tflite_model=spec.tflite, probability_cutoff=spec.cutoff,
            sliding_window_size=spec.window, trained_languages=[], libtensorflowlite_c_path=lib_path,
        )
        self.probability = 0.0

    def step(self, features: Any) -> bool:
        """One feature window; whether the averaged probability is above the cutoff now."""
        p = self._mww.process_streaming_prob(features)
        self.probability = float(p) if p is not None else 0.0
        return self.probability > self.spec.cutoff

    def reset(self) -> None:
        """Forget the audio so far (pymicro-wakeword reloads the model: its streaming state lives in it)."""
        self._mww.reset()
        self.probability = 0.0

    def close(self) -> None:
        self._mww.close()


def load_models(specs: Sequence[ModelSpec]) -> list[WakeWordModel]:
    """Probe and load every model; ConfigError names the key and file of each one that is broken."""
    from pymicro_wakeword.wakeword import TfLiteWakeWord

    lib_path = _tflite_library()
    lib = TfLiteWakeWord(lib_path).lib  # the runtime with its C signatures declared
    problems: list[str] = []
    models: list[WakeWordModel] = []
    for spec in specs:
        try:
            _probe_tflite(spec, lib)
            models.append(WakeWordModel(spec, lib_path))
        except ConfigError as exc:
            problems.extend(exc.problems)
        except (ValueError, RuntimeError, OSError) as exc:
            problems.append(f"{spec.key}: {spec.tflite} cannot be loaded: {exc}")
    if problems:
        for m in models:
            m.close()
        raise ConfigError(problems)
    return models


def open_models(cfg: Config) -> list[WakeWordModel]:
    """The models `cfg` runs (none when it runs none); ConfigError for a missing extra or a bad model."""
    if not wake_words_needed(cfg):
        return []
    if not wakeword_installed():
        key, value = ("wake.mode", cfg.wake.mode) if cfg.wake.mode == "wakeword" else \
            ("session.barge_in", cfg.session.barge_in)
        raise ConfigError(_missing_extra(key, value))
    specs, problems = _resolve(cfg.wake, Path(cfg.path).parent if cfg.path else None)
    models: list[WakeWordModel] = []
    try:
        models = load_models(specs)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        for m in models:
            m.close()
        raise ConfigError(sorted(problems, key=_entry_index))
    return models


def _entry_index(problem: str) -> int:
    m = re.match(r"wake\.wake_words\[(\d+)\]", problem)
    return int(m.group(1)) if m else -1


def check_wake_words(cfg: Config) -> list[str]:
    """The wake-word problems of `cfg` (check-config and start): missing extra, bad entries, broken files."""
    try:
        models = open_models(cfg)
    except ConfigError as exc:
        return list(exc.problems)
    for m in models:
        m.close()
    return []


@dataclass(frozen=True)
class WakeWordResult:
    """The detector's decision for one capture frame."""

    word: str | None  # the wake word detected at this frame (the manifest's phrase), else None
    probability: float  # the highest model probability at this frame (0 while the models do not run)
    running: bool  # the models ran on this frame (a voiced stretch, or its hangover)


class WakeWordDetector:
    """24 kHz capture frames and the VAD's voiced flag in; a detection when a model's probability passes its
    cutoff. Detections are `refractory_ms` apart at least (wake.cooldown_ms)."""

    def __init__(
        self,
        models: Sequence[WakeWordModel],
        *,
        refractory_ms: int,
        frame_ms: int,
        lead_ms: int = LEAD_MS,
        hangover_ms: int = HANGOVER_MS,
        in_format: AudioFormat = VATEL_FORMAT,
    ) -> None:
        import soxr
        from pymicro_wakeword import MicroWakeWordFeatures

        if not models:
            raise ValueError("a WakeWordDetector needs at least one model")
        self.models = list(models)
        self._features_cls = MicroWakeWordFeatures
        self._features = MicroWakeWordFeatures()
        self._in_rate = in_format.rate
        self._soxr = soxr
        self._resampler = self._new_resampler()
        self._lead: deque[bytes] = deque(maxlen=max(1, -(-lead_ms // frame_ms)))
        self._hangover_frames = max(1, -(-hangover_ms // frame_ms))
        self._refractory_frames = -(-refractory_ms // frame_ms) if refractory_ms > 0 else 0
        self._quiet = 0  # frames since the last voiced one while running
        self._since_detection = self._refractory_frames  # frames since the last detection
        self.running = False
        self.dirty = False  # models ran since the last reset
        self.steps = 0  # 10 ms model steps run so far (cost accounting)

    def reset(self) -> None:
        """Stop and forget (a new listening phase): the next voiced frame starts afresh."""
        self._stop()
        self._lead.clear()
        self._since_detection = self._refractory_frames

    def _stop(self) -> None:
        self.running = False
        if self.dirty:
            for m in self.models:
                m.reset()
            self._features.reset()
            self.dirty = False

    def _new_resampler(self) -> Any:
        return self._soxr.ResampleStream(self._in_rate, MODEL_FORMAT.rate, 1, dtype="int16", quality="HQ")

    def _start(self) -> None:
        self.running = True
        self._quiet = 0
        self._resampler = self._new_resampler()

    def process(self, pcm: bytes, voiced: bool) -> WakeWordResult:
        """One capture frame with the VAD's decision for it."""
        self._since_detection += 1
        if not self.running:
            if not voiced:
                self._lead.append(pcm)
                return WakeWordResult(None, 0.0, False)
            self._start()
            backlog = [*self._lead, pcm]
            self._lead.clear()
        else:
            backlog = [pcm]
        self._quiet = 0 if voiced else self._quiet + 1
        word, prob = self._run(b"".join(backlog))
        if word is not None:
            self._since_detection = 0
            self._stop()
        elif self._quiet >= self._hangover_frames:
            self._stop()
        return WakeWordResult(word, prob, True)

    def _run(self, pcm: bytes) -> tuple[str | None, float]:
        x = self._resampler.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        word: str | None = None
        prob = 0.0
        self.dirty = True
        for features in self._features.process_streaming(x.astype("<i2").tobytes()):
            self.steps += 1
            for m in self.models:
                hit = m.step(features)
                prob = max(prob, m.probability)
                if hit and word is None and self._since_detection >= self._refractory_frames:
                    word = m.spec.name
        return word, prob

    def close(self) -> None:
        for m in self.models:
            m.close()


class GatedWakeWord:
    """The wake VAD then the detector, as one callable: barge-in, `mic-test`, `wakeword-test`, the bench."""

    def __init__(self, vad: VoiceDetector, detector: WakeWordDetector) -> None:
        self.vad = vad
        self.detector = detector

    @classmethod
    def for_wake(cls, wake: WakeConfig, models: Sequence[WakeWordModel], frame_ms: int,
                 vad: VadParams | None = None) -> GatedWakeWord:
        """The wake section's VAD (or `vad`) in front of `models`, refractory wake.cooldown_ms."""
        return cls(VoiceDetector(vad or VadParams.from_wake(wake)),
                   WakeWordDetector(models, refractory_ms=wake.cooldown_ms, frame_ms=frame_ms))

    def reset(self) -> None:
        self.vad.reset()
        self.detector.reset()

    def process(self, pcm: bytes) -> tuple[bool, float, WakeWordResult]:
        """(voiced, level dBFS, the detector's result) for one capture frame."""
        r = self.vad.process(pcm)
        return r.voiced, level_dbfs(pcm), self.detector.process(pcm, r.voiced)


@dataclass(frozen=True)
class Detection:
    """A wake word found in a file: when (seconds from the start, at the end of the frame it fired on)."""

    word: str
    t_s: float
    probability: float


def scan(gated: GatedWakeWord, pcm: bytes, frame_ms: int, fmt: AudioFormat = VATEL_FORMAT) -> Iterable[Detection]:
    """Run the gated detector over a whole recording (24 kHz), frame by frame as the daemon does."""
    step = fmt.nbytes(frame_ms)
    for k, i in enumerate(range(0, len(pcm) - step + 1, step)):
        _voiced, _level, r = gated.process(pcm[i : i + step])
        if r.word is not None:
            yield Detection(r.word, (k + 1) * frame_ms / 1000.0, r.probability)


@dataclass
class WakeWordParts:
    """What the microphone path runs for `cfg`: the wake's detector and the barge-in's (each with its own
    models, since a model carries streaming state)."""

    wake: WakeWordDetector | None
    barge: GatedWakeWord | None

    def close(self) -> None:
        for d in (self.wake, self.barge.detector if self.barge else None):
            if d is not None:
                d.close()


def open_wake_words(cfg: Config, *, canceller: bool) -> WakeWordParts:
    """The wake-word detectors `cfg` asks for (barge-in only with an echo canceller); ConfigError when the
    extra is missing or a model is broken, naming the key and the file."""
    frame_ms = cfg.audio.frame_ms
    wake = barge = None
    if cfg.wake.mode == "wakeword":
        wake = WakeWordDetector(open_models(cfg), refractory_ms=cfg.wake.cooldown_ms, frame_ms=frame_ms)
    if canceller and barge_in_by_wake_word(cfg):
        barge = GatedWakeWord.for_wake(cfg.wake, open_models(cfg), frame_ms)
    return WakeWordParts(wake, barge)


def raise_wake_word_problems(cfg: Config) -> None:
    """ConfigError listing check_wake_words(cfg), if any (a reload is refused on them)."""
    problems = check_wake_words(cfg)
    if problems:
        raise ConfigError(problems)
