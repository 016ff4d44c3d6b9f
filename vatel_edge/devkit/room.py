"""A reverberant room with a non-linear loudspeaker, offline and in real time on the PulseAudio null sinks.

The device is a microphone with its loudspeaker 15 cm away in a shoebox room (pyroomacoustics' image source
model, RT60 0.4 s by default); the user speaks from 1-3 m. What the loudspeaker plays is soft-clipped (tanh:
linear when quiet, compressed and distorted when loud), convolved with the speaker->mic impulse response; the
user's speech with the user->mic one; both are scaled by the microphone's gain and a little noise is added.

    mic = render(agent_pcm, user_pcm, user_offset)                   # offline, PCM16 24 kHz bytes
    parts = render_parts(agent_pcm, user_pcm, user_offset)           # ... and the echo / user / noise parts

    async with RealTimeRoom(pulse) as room:                          # spk.monitor -> room -> sink `mic`
        said = room.say(human_speech("front_right"), at_s=2.0)       # mic-stream time; said.start = sample
        ...                                                          # a daemon captures mic.monitor

Sizes of things: the impulse responses are scaled so that a source 1 m away in free field reaches the mic at
gain 1 (pyroomacoustics' 1/r), and a PCM signal stands for the sound 1 m from its source; `mic_gain_db` maps
that to the microphone's PCM. With the defaults the echo arrives about as loud as what is played (the speaker
path's energy is +16.6 dB, the mic gain -16 dB) and a user 2 m away 11.5 dB below their PCM level.

`RoomStream` is the room without I/O (played blocks in, microphone blocks out), so the real-time room is the
offline room run block by block; `RealTimeRoom` runs it in a child process between parec on `spk.monitor` and a
playback stream into `mic` (libpulse-simple through ctypes, because the delay has to stay constant: see there).
Lab code: the daemon never imports it. pyroomacoustics (dev extra) is imported when a room is first built.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import fcntl
import functools
import logging
import math
import os
import socket
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vatel_edge.audio.format import VATEL_FORMAT
from vatel_edge.devkit.sandbox import RAW_ARGS, PulseServer, kill_process

log = logging.getLogger(__name__)

Signal = npt.NDArray[np.float64]
Pcm = npt.NDArray[np.int16]
Vec3 = tuple[float, float, float]

FMT = VATEL_FORMAT
FULL_SCALE = 32768.0


@dataclass(frozen=True)
class RoomSetup:
    """A living room, the device in it and the user; every figure of the rendering."""

    size_m: Vec3 = (5.0, 4.0, 2.6)
    rt60_s: float = 0.4
    mic_m: Vec3 = (3.8, 2.0, 0.9)  # the device's microphone, on a shelf near a wall
    speaker_offset_m: Vec3 = (0.0, 0.15, 0.0)  # the loudspeaker relative to the microphone: 15 cm
    user_distance_m: float = 2.0
    user_azimuth_deg: float = 180.0  # direction from the device, horizontal (0 = +x; 180 = into the room)
    user_mouth_m: float = 1.2  # height of the user's mouth (sitting)
    rate: int = FMT.rate
    drive: float = 2.0  # loudspeaker soft clipping: y = tanh(drive x) / drive (x in full scale); 0 = linear
    mic_gain_db: float = -16.0  # sound at 1 m (PCM level) -> microphone PCM
    noise_dbfs: float = -65.0  # white noise at the microphone (RMS)
    tail_db: float = 60.0  # impulse responses end where their energy decay reaches -tail_db
    seed: int = 0  # the noise

    def positions(self) -> tuple[Vec3, Vec3, Vec3]:
        """(microphone, loudspeaker, user's mouth) in metres; ValueError if one is outside the room."""
        mic = np.array(self.mic_m, dtype=np.float64)
        speaker = mic + np.array(self.speaker_offset_m)
        d = self.user_distance_m
        rise = self.user_mouth_m - mic[2]
        if d <= abs(rise):
            raise ValueError(f"user distance {d} m is shorter than the height difference {rise:.2f} m")
        flat = math.sqrt(d * d - rise * rise)
        az = math.radians(self.user_azimuth_deg)
        user = mic + np.array([flat * math.cos(az), flat * math.sin(az), rise])
        size = np.array(self.size_m)
        for name, p in (("microphone", mic), ("loudspeaker", speaker), ("user", user)):
            if np.any(p < 0.1) or np.any(p > size - 0.1):
                raise ValueError(f"{name} at {np.round(p, 2).tolist()} m is not inside the {self.size_m} m room")
        return _vec(mic), _vec(speaker), _vec(user)


def _vec(p: Signal) -> Vec3:
    return (float(p[0]), float(p[1]), float(p[2]))


DEFAULT_ROOM = RoomSetup()


@dataclass(frozen=True)
class RoomResponse:
    """The two impulse responses of a setup (pyroomacoustics scale: a direct path at r metres has gain 1/r).

    pyroomacoustics delays every response by 40 samples (its fractional-delay filter); the direct path of the
    loudspeaker 15 cm away is at sample 50, the user's 2 m away at 180."""

    setup: RoomSetup
    speaker: Signal  # loudspeaker -> microphone
    user: Signal  # user's mouth -> microphone
    speaker_delay: float  # where the direct sound is in `speaker`, in samples (filter delay + distance / c)
    user_delay: float

    @property
    def mic_gain(self) -> float:
        return float(10 ** (self.setup.mic_gain_db / 20))

    @property
    def speaker_direct(self) -> int:
        """Sample index of the loudspeaker's direct sound in its response."""
        return round(self.speaker_delay)

    @property
    def user_direct(self) -> int:
        """Sample index of the user's direct sound in theirs (at 3 m a reflection can be stronger)."""
        return round(self.user_delay)

    def echo_gain_db(self) -> float:
        """Energy gain of the echo path (loudspeaker output -> microphone PCM), in dB."""
        return float(10 * np.log10(np.sum(self.speaker**2)) + self.setup.mic_gain_db)

    def user_gain_db(self) -> float:
        """Energy gain of the user path (the user's PCM -> microphone PCM), in dB."""
        return float(10 * np.log10(np.sum(self.user**2)) + self.setup.mic_gain_db)


@functools.lru_cache(maxsize=8)
def room_response(setup: RoomSetup = DEFAULT_ROOM) -> RoomResponse:
    """The setup's impulse responses (image sources, uniform absorption from Sabine's formula for rt60_s), cut
    at -tail_db of energy decay. Cached: a response takes about 0.3 s to build."""
    import pyroomacoustics as pra  # type: ignore[import-untyped]  # lazy: dev extra, 1.4 s to import

    mic, speaker, user = setup.positions()
    absorption, max_order = pra.inverse_sabine(setup.rt60_s, list(setup.size_m))
    room = pra.ShoeBox(list(setup.size_m), fs=setup.rate, materials=pra.Material(absorption),
                       max_order=max_order, air_absorption=False)
    room.add_source(list(speaker))
    room.add_source(list(user))
    room.add_microphone(list(mic))
    room.compute_rir()
    responses = []
    for source in (0, 1):
        h = _cut_tail(np.asarray(room.rir[0][source], dtype=np.float64), setup.tail_db)
        h.flags.writeable = False
        responses.append(h)
    log.debug("room %s: responses of %d and %d samples", setup.size_m, responses[0].size, responses[1].size)
    filter_delay = pra.constants.get("frac_delay_length") // 2
    c = pra.constants.get("c")
    delays = [filter_delay + math.dist(mic, p) / c * setup.rate for p in (speaker, user)]
    return RoomResponse(setup, responses[0], responses[1], delays[0], delays[1])


def _cut_tail(h: Signal, tail_db: float) -> Signal:
    """`h` up to where its remaining energy (Schroeder integral) falls `tail_db` below the total."""
    remaining = np.cumsum(h[::-1] ** 2)[::-1]
    below = np.flatnonzero(remaining < remaining[0] * 10 ** (-tail_db / 10))
    return h[: int(below[0])].copy() if below.size else h.copy()


def rt60_estimate(h: Signal, rate: int = FMT.rate, *, direct: int | None = None, skip_ms: float = 2.5,
                  from_db: float = -5.0, to_db: float = -25.0) -> float:
    """Reverberation time of an impulse response: the Schroeder energy decay after the direct sound (from
    `skip_ms` past `direct`, by default the strongest tap), a least-squares line between `from_db` and `to_db`
    (T20), extended to 60 dB."""
    start = (int(np.argmax(np.abs(h))) if direct is None else direct) + round(rate * skip_ms / 1000)
    energy = np.cumsum(h[start:][::-1] ** 2)[::-1]
    edc = 10 * np.log10(np.maximum(energy, 1e-300) / energy[0])
    sel = np.flatnonzero((edc <= from_db) & (edc >= to_db))
    if sel.size < 2:
        raise ValueError("the response does not decay through the fitting range")
    slope = float(np.polyfit(sel / rate, edc[sel], 1)[0])
    return -60.0 / slope


def soft_clip(x: Signal, drive: float) -> Signal:
    """The loudspeaker's non-linearity on PCM16-scaled samples: FULL_SCALE * tanh(drive x / FULL_SCALE) / drive
    (unity gain for quiet sounds, a full-scale input comes out at tanh(drive)/drive); drive 0 is linear."""
    if drive <= 0:
        return np.asarray(x, dtype=np.float64)
    y: Signal = FULL_SCALE * np.tanh(drive * np.asarray(x, dtype=np.float64) / FULL_SCALE) / drive
    return y


def convolve(x: Signal, h: Signal) -> Signal:
    """Full linear convolution by FFT (x.size + h.size - 1 samples)."""
    n = x.size + h.size - 1
    if x.size == 0 or h.size == 0:
        return np.zeros(max(n, 0))
    nfft = 1 << (n - 1).bit_length()
    y: Signal = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n]
    return y


def _samples(pcm: bytes | Pcm) -> Signal:
    if isinstance(pcm, bytes):
        return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return np.asarray(pcm, dtype=np.float64)


def _quantise(x: Signal) -> Pcm:
    out: Pcm = np.clip(np.rint(x), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)
    return out


def _noise_sigma(setup: RoomSetup) -> float:
    return float(FULL_SCALE * 10 ** (setup.noise_dbfs / 20))


# ------------------------------------------------------------------------------------------------------------
# offline


@dataclass(frozen=True)
class Rendered:
    """One offline rendering: the microphone signal and its parts (float, PCM16 units, before quantisation)."""

    mic: Pcm
    echo: Signal  # the loudspeaker through the room
    user: Signal  # the user through the room, starting at user_offset (zeros elsewhere)
    noise: Signal
    user_offset: int
    response: RoomResponse


def render_parts(agent_pcm: bytes | Pcm, user_pcm: bytes | Pcm = b"", user_offset: int = 0, *,
                 setup: RoomSetup = DEFAULT_ROOM) -> Rendered:
    """What the microphone hears while the loudspeaker plays `agent_pcm` (from sample 0) and the user says
    `user_pcm` from sample `user_offset`. As long as the longer of the two; the reverberant tail past it is
    cut (append silence to hear it)."""
    if user_offset < 0:
        raise ValueError("user_offset must be >= 0")
    response = room_response(setup)
    agent = _samples(agent_pcm)
    user = _samples(user_pcm)
    n = max(agent.size, user_offset + user.size if user.size else 0)
    echo = convolve(soft_clip(agent, setup.drive), response.speaker)[:n] * response.mic_gain
    echo = np.pad(echo, (0, n - echo.size))
    voice = np.zeros(n)
    if user.size:
        part = convolve(user, response.user)[: n - user_offset] * response.mic_gain
        voice[user_offset : user_offset + part.size] = part
    noise = np.random.default_rng(setup.seed).standard_normal(n) * _noise_sigma(setup)
    return Rendered(_quantise(echo + voice + noise), echo, voice, noise, user_offset, response)


def render(agent_pcm: bytes, user_pcm: bytes, user_offset: int, *, setup: RoomSetup = DEFAULT_ROOM) -> bytes:
    """The microphone's PCM16 LE 24 kHz: render_parts(...).mic as bytes."""
    return render_parts(agent_pcm, user_pcm, user_offset, setup=setup).mic.astype("<i2").tobytes()


# ------------------------------------------------------------------------------------------------------------
# the room block by block, without I/O


class BlockConvolver:
    """Streaming convolution with a fixed response in blocks of `block` samples (uniformly partitioned
    overlap-save): output block k is exactly samples [k*block, (k+1)*block) of the full convolution, so the
    filter adds no delay of its own beyond the response's."""

    def __init__(self, h: Signal, block: int) -> None:
        if block <= 0:
            raise ValueError("block must be positive")
        self.block = block
        parts = max(1, -(-h.size // block))
        padded = np.zeros(parts * block)
        padded[: h.size] = h
        self._spectra = np.fft.rfft(padded.reshape(parts, block), n=2 * block, axis=1)
        self._delay_line = np.zeros_like(self._spectra)  # input spectra, newest at _head
        self._head = 0
        self._order = np.arange(parts)
        self._previous = np.zeros(block)

    def process(self, x: Signal) -> Signal:
        """The next `block` output samples for the next `block` input samples."""
        if x.size != self.block:
            raise ValueError(f"expected {self.block} samples, got {x.size}")
        frame = np.concatenate([self._previous, x])
        self._previous = np.array(x, dtype=np.float64)
        parts = self._spectra.shape[0]
        self._head = (self._head - 1) % parts
        self._delay_line[self._head] = np.fft.rfft(frame)
        spectrum = np.einsum("kf,kf->f", self._delay_line[(self._head + self._order) % parts], self._spectra)
        y: Signal = np.fft.irfft(spectrum, 2 * self.block)[self.block :]
        return y


@dataclass
class UserSpeech:
    """One utterance mixed into the microphone stream."""

    start: int  # mic-stream sample where the clean speech's first sample enters the room
    clean: Pcm  # what the user said (the source, 24 kHz)
    at_mic: Signal  # its part of the microphone signal from `start` on (room, mic gain; PCM16 units)
    direct_delay: int  # samples from `start` to the direct sound at the microphone

    @property
    def end(self) -> int:
        """Mic-stream sample after its last contribution (the reverberant tail included)."""
        return self.start + self.at_mic.size


def speech_at_mic(response: RoomResponse, pcm: bytes | Pcm) -> tuple[Pcm, Signal]:
    """(the clean speech, its part of the microphone signal): the user->mic response and the mic gain."""
    clean = _quantise(_samples(pcm))
    return clean, convolve(clean.astype(np.float64), response.user) * response.mic_gain


MAX_PENDING_SPEECH = 64  # utterances scheduled and not yet finished; more is refused (a test has a handful)


class RoomStream:
    """The room as a stream: blocks of what the loudspeaker played in, blocks of the microphone out, with the
    user's speech mixed in at stream positions. No I/O, no threads (RealTimeRoom adds both). Fed the same
    played signal, it produces render()'s output block by block (same noise, the same to a rounding)."""

    def __init__(self, setup: RoomSetup = DEFAULT_ROOM, *, block: int = FMT.samples(10),
                 response: RoomResponse | None = None) -> None:
        self.setup = setup
        self.block = block
        self.response = room_response(setup) if response is None else response
        self._echo = BlockConvolver(self.response.speaker * self.response.mic_gain, block)
        self._rng = np.random.default_rng(setup.seed)
        self._sigma = _noise_sigma(setup)
        self.position = 0  # samples of microphone produced so far
        self.speech: list[UserSpeech] = []  # every utterance, in the order scheduled
        self._pending: list[UserSpeech] = []

    def say(self, pcm: bytes | Pcm, at: int | None = None) -> UserSpeech:
        """Mix the user saying `pcm` into the stream from sample `at` (None or a past sample: the next block).
        RuntimeError past MAX_PENDING_SPEECH unfinished utterances."""
        clean, at_mic = speech_at_mic(self.response, pcm)
        return self.mix(clean, at_mic, at)

    def mix(self, clean: Pcm, at_mic: Signal, at: int | None = None) -> UserSpeech:
        """say() with the rendering done already (speech_at_mic): only schedules it."""
        if len(self._pending) >= MAX_PENDING_SPEECH:
            raise RuntimeError(f"more than {MAX_PENDING_SPEECH} utterances pending")
        start = self.position if at is None else max(int(at), self.position)
        said = UserSpeech(start, clean, at_mic, self.response.user_direct)
        self.speech.append(said)
        self._pending.append(said)
        return said

    def process(self, played: bytes | Pcm) -> Pcm:
        """The microphone's next block for the loudspeaker's next block (`block` samples)."""
        x = _samples(played)
        mix = self._echo.process(soft_clip(x, self.setup.drive))
        mix += self._rng.standard_normal(self.block) * self._sigma
        begin, end = self.position, self.position + self.block
        for said in self._pending:
            a, b = max(said.start, begin), min(said.end, end)
            if a < b:
                mix[a - begin : b - begin] += said.at_mic[a - said.start : b - said.start]
        self._pending = [s for s in self._pending if s.end > end]
        self.position = end
        return _quantise(mix)


# ------------------------------------------------------------------------------------------------------------
# real time on PulseAudio
#
# The real-time loop runs in a child process (python -m vatel_edge.devkit.room FD): in the test process a daemon,
# a simulator and pytest share one GIL with it, and a block that waits for the GIL underruns the mic sink and
# lengthens the delay for good (measured: one busy Python thread turned 38 ms into 105-500 ms). The parent
# renders the user's speech, the child only mixes and moves bytes; they talk over a socketpair (pickles).


class _Clock:
    """Maps a stream's sample index to monotonic time from block arrival stamps: the earliest arrival seen
    (t - n/rate, minimum after the first `warmup` blocks) is the stream's clock plus the transport's least
    delay; how much later than that the others came is the arrival jitter."""

    def __init__(self, rate: int, *, warmup: int = 20, late_s: float = 0.02) -> None:
        self.rate = rate
        self.warmup = warmup
        self.late_s = late_s
        self.blocks = 0
        self.offset = math.inf
        self.latest = -math.inf
        self.late_blocks = 0  # blocks more than late_s later than the earliest so far

    def stamp(self, samples_so_far: int, t: float) -> None:
        self.blocks += 1
        if self.blocks > self.warmup:
            lag = t - samples_so_far / self.rate
            self.offset = min(self.offset, lag)
            self.latest = max(self.latest, lag)
            self.late_blocks += lag - self.offset > self.late_s

    def time_of(self, sample: int) -> float:
        """Monotonic time at which sample `sample` was available (RuntimeError before the warm-up is over)."""
        if not math.isfinite(self.offset):
            raise RuntimeError("no clock yet: the stream has not run long enough")
        return self.offset + sample / self.rate

    @property
    def jitter_s(self) -> float:
        """Largest arrival lateness relative to the earliest (0 before the warm-up is over)."""
        return self.latest - self.offset if math.isfinite(self.offset) else 0.0


def _pipe_bytes(fd: int) -> int:
    """Bytes waiting in the pipe `fd` (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count, True)
    return count[0]


def _read_exact(fd: int, n: int) -> bytes | None:
    """Exactly `n` bytes from `fd`, or None at end of file."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _parec(source: str, latency_ms: int, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["parec", "-d", source, f"--latency-msec={latency_ms}", *RAW_ARGS],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
    )


class _SampleSpec(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("rate", ctypes.c_uint32), ("channels", ctypes.c_uint8)]


class _BufferAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("maxlength", "tlength", "prebuf", "minreq", "fragsize")]


_PA_SAMPLE_S16LE = 3
_PA_DEFAULT = 0xFFFFFFFF  # (uint32_t) -1: the server's default for a buffer attribute
_PA_STREAM_PLAYBACK = 1


@functools.cache
def _libpulse_simple() -> ctypes.CDLL:
    """libpulse-simple (Debian libpulse0, a dependency of pulseaudio-utils), with the prototypes used here."""
    name = ctypes.util.find_library("pulse-simple") or "libpulse-simple.so.0"
    lib = ctypes.CDLL(name)
    lib.pa_simple_new.restype = ctypes.c_void_p
    lib.pa_simple_new.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.POINTER(_SampleSpec), ctypes.c_void_p, ctypes.POINTER(_BufferAttr),
                                  ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_write.restype = ctypes.c_int
    lib.pa_simple_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
    lib.pa_simple_free.restype = None
    lib.pa_simple_free.argtypes = [ctypes.c_void_p]
    return lib


class _Playback:
    """A blocking libpulse-simple playback stream (ctypes). Unlike pacat it takes prebuf 0: after an underrun
    the sink does not wait for a refill, which would lengthen the delay for good, but plays on and drops what
    comes too late, so the delay holds. Its buffer is `latency_ms` (tlength); writes block when it is full."""

    def __init__(self, device: str, *, block_bytes: int, latency_ms: int) -> None:
        self._lib = _libpulse_simple()
        spec = _SampleSpec(_PA_SAMPLE_S16LE, FMT.rate, FMT.channels)
        attr = _BufferAttr(_PA_DEFAULT, FMT.nbytes(latency_ms), 0, block_bytes, _PA_DEFAULT)
        error = ctypes.c_int(0)
        handle = self._lib.pa_simple_new(None, b"vatel-edge room", _PA_STREAM_PLAYBACK, device.encode(), b"room",
                                         ctypes.byref(spec), None, ctypes.byref(attr), ctypes.byref(error))
        if not handle:
            raise OSError(f"cannot open a PulseAudio playback stream on {device!r} (error {error.value})")
        self._handle: int | None = handle
        self.device = device

    def write(self, data: bytes) -> None:
        error = ctypes.c_int(0)
        if self._lib.pa_simple_write(self._handle, data, len(data), ctypes.byref(error)) < 0:
            raise OSError(f"writing {self.device!r} failed (error {error.value})")

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.pa_simple_free(handle)


class _Recorder:
    """Bounded recording: keeps the first `max_samples` samples, then drops the rest and says so."""

    def __init__(self, max_samples: int) -> None:
        self._max_bytes = max_samples * FMT.bytes_per_frame
        self._buf = bytearray()
        self.overflowed = False

    def add(self, data: bytes) -> None:
        room = self._max_bytes - len(self._buf)
        if room < len(data):
            self.overflowed = True
        self._buf += data[: max(0, room)]

    def pcm(self) -> Pcm:
        return np.frombuffer(bytes(self._buf), dtype="<i2").astype(np.int16)


class SourceRecorder:
    """parec on a PulseAudio source (default `mic.monitor`: what a daemon's microphone captures) in a thread,
    with the time each sample arrived (time_of). Context manager; close() is idempotent."""

    def __init__(self, pulse: PulseServer, source: str = "mic.monitor", *, latency_ms: int = 10,
                 max_s: float = 120.0, block_ms: float = 10.0) -> None:
        self.pulse = pulse
        self.source = source
        self.latency_ms = latency_ms
        self.block = FMT.samples(block_ms)
        self.clock = _Clock(FMT.rate)
        self._record = _Recorder(FMT.samples(max_s * 1000))
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.received = 0  # samples

    def __enter__(self) -> SourceRecorder:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self._proc = _parec(self.source, self.latency_ms, self.pulse.env)
        self._thread = threading.Thread(target=self._run, args=(self._proc,), name=f"record {self.source}",
                                        daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        nbytes = self.block * FMT.bytes_per_frame
        while (data := _read_exact(fd, nbytes)) is not None:
            self.received += self.block
            self.clock.stamp(self.received, time.monotonic())
            self._record.add(data)

    def samples(self) -> Pcm:
        """What was recorded so far (the first max_s)."""
        return self._record.pcm()

    def time_of(self, sample: int) -> float:
        """Monotonic time at which recorded sample `sample` was available to a capturing client."""
        return self.clock.time_of(sample)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_process(proc)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class RoomStatus:
    """The real-time room's figures, as its process reports them."""

    position: int  # mic-stream samples produced (= played samples read)
    clock_offset: float | None  # stream_time(n) = clock_offset + n / rate (None during the warm-up)
    jitter_s: float  # how much later than the earliest a block of spk.monitor reached the room
    late_blocks: int  # blocks that reached the room more than latency_ms late
    blocks: int
    process_s_max: float  # longest processing of one block
    write_s_max: float  # longest blocking write into the mic sink
    backlog_s_max: float  # largest spk.monitor backlog seen since the room settled (LatencyGuard)
    dropped: tuple[tuple[int, int], ...] = ()  # mic-stream blocks (start, samples) not delivered, to hold it
    errors: tuple[str, ...] = ()


class LatencyGuard:
    """Holds the room's delay constant. While the loop keeps up, spk.monitor's record stream has next to nothing
    waiting (`backlog`). After a block late enough to underrun the mic sink, the sink went on without it and
    the loop, catching up, fills the sink's buffer and then waits on it: the lateness stays behind as backlog,
    and as extra delay, for good. A backlog that is only being caught up drains within milliseconds; one that
    stays over `threshold_s` for `persist_s` is this case, and blocks are dropped (not delivered to the mic)
    until it is gone: the stream loses what came too late instead of lagging from then on."""

    def __init__(self, *, threshold_s: float = 0.015, persist_s: float = 0.1) -> None:
        self.threshold_s = threshold_s
        self.persist_s = persist_s
        self._since: float | None = None

    def keep(self, backlog_s: float, now: float) -> bool:
        """Deliver this block (True) or drop it (False)?"""
        if backlog_s <= self.threshold_s:
            self._since = None
            return True
        if self._since is None:
            self._since = now
        return now - self._since < self.persist_s


@dataclass(frozen=True)
class _ServeConfig:
    setup: RoomSetup
    response: RoomResponse
    block: int
    latency_ms: int
    played_path: str
    written_path: str
    record_samples: int


class RealTimeRoom:
    """The room in real time: reads what is played into null sink `spk` (parec spk.monitor), runs RoomStream
    on it in 10 ms blocks and writes the microphone into null sink `mic`, so that a daemon capturing
    `mic.monitor` hears its own loudspeaker through the room, and the user's speech where say() put it.

    Async context manager (also a plain one). The loop runs in a child process (python -m
    vatel_edge.devkit.room): in the test process a daemon, a simulator and pytest share a GIL with it, and a
    block waiting for the GIL underruns the mic sink. One mic sample is produced per played sample: mic-stream
    sample n is played sample n through the room, and left the room when that sample arrived (stream_time).

    The delay stays constant (measured here, spk.monitor to mic.monitor: 23-32 ms with latency_ms 20, varying
    from run to run with how the sinks settle, 21 ms with 10; the same to the sample within a run, also with two
    busy Python threads in the parent at 20 ms; tests/devkit/test_realtime_room.py): the playback stream takes
    prebuf 0 and a prefill of latency_ms (pacat cannot: after each underrun it waits for a refill and the delay
    grows by the gap for good, 38 -> 105-500 ms measured), and LatencyGuard drops blocks that arrive too late to
    catch up (status().dropped). The price: when the room's process is held up longer than latency_ms, the mic
    sink plays a few ms of silence (seen on this loaded machine: 0-2 blocks in a 6 s run), so a test that
    checks what the daemon heard compares it with a SourceRecorder on mic.monitor, not with written().
    What was played and written is recorded (the first record_s, files under the server's root); `speech`
    lists what the user said and where."""

    _count = 0

    def __init__(self, pulse: PulseServer, setup: RoomSetup = DEFAULT_ROOM, *, block_ms: float = 10.0,
                 latency_ms: int = 20, record_s: float = 120.0) -> None:
        self.pulse = pulse
        self.setup = setup
        self.response = room_response(setup)
        self.block = FMT.samples(block_ms)
        self.latency_ms = latency_ms
        self.record_samples = FMT.samples(record_s * 1000)
        RealTimeRoom._count += 1
        stem = pulse.root / f"room-{os.getpid()}-{RealTimeRoom._count}"
        self.played_path = stem.with_name(stem.name + "-played.raw")
        self.written_path = stem.with_name(stem.name + "-written.raw")
        self.log_path = stem.with_name(stem.name + ".log")
        self.final_status: RoomStatus | None = None
        self._speech: list[UserSpeech] = []
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> RealTimeRoom:
        self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def __enter__(self) -> RealTimeRoom:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self, *, timeout: float = 10.0) -> None:
        """Start the room's process (parec, the playback stream, the loop); return once both sinks render in
        small blocks."""
        if self._proc is not None:
            raise RuntimeError("the room is already running")
        ours, theirs = socket.socketpair()
        try:
            with theirs, open(self.log_path, "wb") as log_file:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                    env=self.pulse.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
                )
            self._conn = Connection(ours.detach())
            self._conn.send(_ServeConfig(self.setup, self.response, self.block, self.latency_ms,
                                         str(self.played_path), str(self.written_path), self.record_samples))
            reply = self._receive(timeout)
            if reply[0] != "ready":
                raise RuntimeError(f"the room did not start: {reply}")
            self.pulse.wait_sink_latency("spk", 0.1, timeout=timeout)
            self.pulse.wait_sink_latency("mic", 0.1, timeout=timeout)
            self._request("settle")
        except BaseException:
            ours.close()
            self.close()
            raise

    def _receive(self, timeout: float) -> tuple[object, ...]:
        assert self._conn is not None
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the room's process did not answer within {timeout} s ({self.log_path})")
        reply: tuple[object, ...] = self._conn.recv()
        return reply

    def _request(self, *message: object, timeout: float = 5.0) -> tuple[object, ...]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the room is not running")
            try:
                self._conn.send(message)
                return self._receive(timeout)
            except (EOFError, OSError) as exc:
                raise RuntimeError(f"the room's process is gone ({exc!r}; {self.log_path})") from None

    def say(self, pcm: bytes | Pcm, at_s: float | None = None) -> UserSpeech:
        """The user says `pcm` at mic-stream time `at_s` (seconds since the room started; None or a past time:
        the next block). The returned record's `start` is its first sample in the mic stream."""
        clean, at_mic = speech_at_mic(self.response, pcm)
        at = None if at_s is None else FMT.samples(at_s * 1000)
        reply = self._request("say", at, at_mic)
        if reply[0] != "said" or not isinstance(reply[1], int):
            raise RuntimeError(f"the room refused the speech: {reply}")
        said = UserSpeech(reply[1], clean, at_mic, self.response.user_direct)
        self._speech.append(said)
        return said

    @property
    def speech(self) -> list[UserSpeech]:
        """What the user said, in the order scheduled."""
        return list(self._speech)

    def status(self) -> RoomStatus:
        """The room's figures now (after close(): the last ones)."""
        if self._conn is None and self.final_status is not None:
            return self.final_status
        reply = self._request("status")
        assert isinstance(reply[1], RoomStatus)
        return reply[1]

    @property
    def position(self) -> int:
        """Samples of microphone written so far."""
        return self.status().position

    def stream_time(self, sample: int) -> float:
        """Monotonic time at which mic-stream sample `sample` (played sample `sample`) reached the room."""
        offset = self.status().clock_offset
        if offset is None:
            raise RuntimeError("no clock yet: the room has not run long enough")
        return offset + sample / FMT.rate

    def played(self) -> Pcm:
        """What spk.monitor delivered to the room (the first record_s)."""
        return _read_pcm(self.played_path)

    def written(self) -> Pcm:
        """What the room wrote into the mic sink (the first record_s)."""
        return _read_pcm(self.written_path)

    def close(self) -> None:
        """Stop the room's process (and its parec); idempotent."""
        conn, proc = self._conn, self._proc
        if conn is not None:
            try:
                reply = self._request("stop", timeout=5.0)
                if isinstance(reply[1], RoomStatus):
                    self.final_status = reply[1]
            except (RuntimeError, TimeoutError) as exc:
                log.warning("real-time room: no clean stop: %s", exc)
            with self._lock:
                self._conn = None
            conn.close()
        self._proc = None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_process(proc)


def _read_pcm(path: Path) -> Pcm:
    data = path.read_bytes() if path.exists() else b""
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


def _serve(fd: int) -> int:
    """The room's process: spk.monitor -> RoomStream -> sink mic through libpulse-simple, the latency guard
    on every block, commands between blocks (say, status, settle, stop)."""
    conn = Connection(fd)
    cfg: _ServeConfig = conn.recv()
    stream = RoomStream(cfg.setup, block=cfg.block, response=cfg.response)
    clock = _Clock(FMT.rate, late_s=cfg.latency_ms / 1000)
    guard = LatencyGuard()
    worst = {"process": 0.0, "write": 0.0, "backlog": 0.0}
    dropped: list[tuple[int, int]] = []
    errors: list[str] = []

    def status() -> RoomStatus:
        offset = clock.offset if math.isfinite(clock.offset) else None
        return RoomStatus(stream.position, offset, clock.jitter_s, clock.late_blocks, clock.blocks,
                          worst["process"], worst["write"], worst["backlog"], tuple(dropped), tuple(errors))

    nbytes = cfg.block * FMT.bytes_per_frame
    record_bytes = cfg.record_samples * FMT.bytes_per_frame
    play = _Playback("mic", block_bytes=nbytes, latency_ms=cfg.latency_ms)
    parec = _parec("spk.monitor", cfg.latency_ms, None)
    assert parec.stdout is not None
    src = parec.stdout.fileno()
    play.write(bytes(FMT.nbytes(cfg.latency_ms)))  # the playback buffer's fill: the room's slack for late blocks
    conn.send(("ready",))
    stopping = False
    try:
        with open(cfg.played_path, "wb") as played, open(cfg.written_path, "wb") as written:
            while not stopping and (data := _read_exact(src, nbytes)) is not None:
                t0 = time.monotonic()
                out = stream.process(data).astype("<i2").tobytes()
                clock.stamp(stream.position, t0)
                t1 = time.monotonic()
                backlog = _pipe_bytes(src) / (FMT.rate * FMT.bytes_per_frame)
                worst["backlog"] = max(worst["backlog"], backlog)
                if guard.keep(backlog, t0):
                    play.write(out)
                else:
                    dropped.append((stream.position - cfg.block, cfg.block))
                t2 = time.monotonic()
                worst["process"] = max(worst["process"], t1 - t0)
                worst["write"] = max(worst["write"], t2 - t1)
                if played.tell() < record_bytes:
                    played.write(data)
                    written.write(out)
                    played.flush()
                    written.flush()
                while not stopping and conn.poll():
                    message = conn.recv()
                    if message[0] == "say":
                        try:
                            said = stream.mix(np.zeros(0, dtype=np.int16), message[2], message[1])
                            conn.send(("said", said.start))
                        except RuntimeError as exc:
                            conn.send(("refused", str(exc)))
                    elif message[0] == "status":
                        conn.send(("status", status()))
                    elif message[0] == "settle":  # the sinks have their low latency now: count from here
                        dropped.clear()
                        worst.update(process=0.0, write=0.0, backlog=0.0)
                        conn.send(("settled",))
                    else:
                        stopping = True
        conn.send(("stopped", status()))
    except (EOFError, OSError) as exc:  # the parent or the sound server went away: stop
        print(f"real-time room stopped: {exc!r}", file=sys.stderr)
    finally:
        kill_process(parec)
        play.close()
        conn.close()
    return 0


# ------------------------------------------------------------------------------------------------------------
# figures


def click_train(count: int, period_ms: float, *, lead_ms: float = 200.0, amplitude: int = 12000) -> bytes:
    """PCM16 LE: `count` one-sample clicks every `period_ms`, the first after `lead_ms` of silence, then one
    period of silence (a probe of a path's delay: each click is exactly where it is)."""
    period = FMT.samples(period_ms)
    lead = FMT.samples(lead_ms)
    x = np.zeros(lead + period * (count + 1), dtype=np.int16)
    x[lead : lead + period * count : period] = amplitude
    return x.astype("<i2").tobytes()


def click_positions(x: Pcm, *, threshold: float = 0.5, min_gap_ms: float = 50.0) -> list[int]:
    """Sample index of each click in `x`: the first sample above `threshold` x the peak, then the strongest
    sample within the next few ms (the direct sound), clicks at least `min_gap_ms` apart."""
    a = np.abs(x.astype(np.float64))
    if a.size == 0 or a.max() == 0:
        return []
    gap = FMT.samples(min_gap_ms)
    window = FMT.samples(5)
    found: list[int] = []
    i = 0
    loud = np.flatnonzero(a > threshold * a.max())
    while True:
        k = int(np.searchsorted(loud, i))
        if k == loud.size:
            return found
        first = int(loud[k])
        peak = first + int(np.argmax(a[first : first + window]))
        found.append(peak)
        i = first + gap


if __name__ == "__main__":
    # run the imported module's _serve, so that what it pickles is named vatel_edge.devkit.room.*, not __main__.*
    from vatel_edge.devkit.room import _serve as serve

    sys.exit(serve(int(sys.argv[1])))
