"""The PCM backend over pyalsaaudio: open at 24 kHz mono, or fall back to what the device really does.

pyalsaaudio 0.11 never refuses a rate or channel count: it asks alsa-lib for the nearest rate and lets
`snd_pcm_hw_params` pick the channels, then reports what it got. So we ask for 24 kHz mono, read the
negotiated parameters back from `info()`, and when they differ reopen at the device's native rate and
channels with a period of the same duration. Callers convert (channel pick/duplicate + Resampler).

All I/O is nonblocking: `wait()` polls the device's descriptors plus an optional wake-up descriptor,
so a reader or writer thread can always be stopped within one timeout.
"""

from __future__ import annotations

import errno
import logging
import os
import select
from dataclasses import dataclass
from typing import Any, Literal

import alsaaudio

from vatel_edge.audio.format import VATEL_FORMAT, AudioFormat
from vatel_edge.errors import AudioDeviceError

log = logging.getLogger(__name__)

Direction = Literal["capture", "playback"]
_TYPES = {"capture": alsaaudio.PCM_CAPTURE, "playback": alsaaudio.PCM_PLAYBACK}


@dataclass(frozen=True)
class Negotiated:
    """What the device actually opened with."""

    device: str
    direction: Direction
    native: AudioFormat  # the device side: rate and channels as negotiated
    period_frames: int  # device frames per ALSA period
    buffer_frames: int  # device frames in the ALSA buffer

    @property
    def converts(self) -> bool:
        """True when the device does not run at 24 kHz mono and we convert in-process."""
        return self.native != VATEL_FORMAT

    def describe(self) -> str:
        """One line for the log."""
        how = "native, resampled in-process" if self.converts else "as requested"
        return (
            f"{self.direction} {self.device!r}: {self.native.rate} Hz, {self.native.channels} ch, S16_LE "
            f"({how}); period {self.period_frames} frames, buffer {self.buffer_frames} frames"
        )


def _open_raw(device: str, direction: Direction, fmt: AudioFormat, period_ms: float, periods: int) -> Any:
    try:
        return alsaaudio.PCM(
            type=_TYPES[direction],
            mode=alsaaudio.PCM_NONBLOCK,
            device=device,
            rate=fmt.rate,
            channels=fmt.channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=max(1, fmt.samples(period_ms)),
            periods=periods,
        )
    except alsaaudio.ALSAAudioError as exc:
        raise AudioDeviceError(f"cannot open {direction} device {device!r}: {exc}") from None


def _negotiated(pcm: Any) -> tuple[AudioFormat, int, int, int]:
    info = pcm.info()
    fmt = AudioFormat(rate=int(info["rate"]), channels=int(info["channels"]))
    return fmt, int(info["format"]), int(info["period_size"]), int(info["buffer_size"])


class AlsaPcm:
    """One open nonblocking PCM, in S16_LE at its negotiated rate and channels."""

    def __init__(self, device: str, direction: Direction, *, period_ms: float, periods: int) -> None:
        pcm = _open_raw(device, direction, VATEL_FORMAT, period_ms, periods)
        try:
            native, sample_format, period, buffer = _negotiated(pcm)
            if native != VATEL_FORMAT:
                # reopen with a period of the same duration at the native rate
                pcm.close()
                pcm = _open_raw(device, direction, native, period_ms, periods)
                native, sample_format, period, buffer = _negotiated(pcm)
            if sample_format != alsaaudio.PCM_FORMAT_S16_LE:
                raise AudioDeviceError(
                    f"{direction} device {device!r} does not do S16_LE; use a plug device (e.g. plughw:...)"
                )
        except BaseException:
            pcm.close()
            raise
        self._pcm: Any = pcm
        self.negotiated = Negotiated(device, direction, native, period, buffer)
        self._fds = [(fd, ev) for fd, ev in pcm.polldescriptors()]

    @property
    def native(self) -> AudioFormat:
        """The device-side format."""
        return self.negotiated.native

    def read(self) -> bytes | None:
        """Whatever captured audio is available now (maybe b''); None after an overrun (recovered)."""
        try:
            n, data = self._pcm.read()
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(f"capture device {self.negotiated.device!r} failed: {exc}") from None
        if n == -errno.EPIPE:
            return None
        if n < 0:
            raise AudioDeviceError(f"capture device {self.negotiated.device!r} failed: {os.strerror(-n)}")
        return bytes(data)

    def write(self, data: bytes) -> int | None:
        """Write as many whole frames as fit now; the count written, None after an underrun (recovered)."""
        try:
            n = int(self._pcm.write(data))
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(f"playback device {self.negotiated.device!r} failed: {exc}") from None
        if n == -errno.EPIPE:
            return None
        if n < 0:
            raise AudioDeviceError(f"playback device {self.negotiated.device!r} failed: {os.strerror(-n)}")
        return n

    def delay_frames(self) -> int:
        """Frames written but not yet played (playback), estimated as buffer minus avail."""
        try:
            avail = int(self._pcm.avail())
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(f"playback device {self.negotiated.device!r} failed: {exc}") from None
        if avail < 0:  # -EPIPE: underrun, nothing left in the device
            return 0
        return max(0, self.negotiated.buffer_frames - avail)

    def drop(self) -> None:
        """Stop now and discard whatever is in the device buffer (the next write re-prepares)."""
        try:
            self._pcm.drop()
        except alsaaudio.ALSAAudioError as exc:
            raise AudioDeviceError(f"device {self.negotiated.device!r} failed to stop: {exc}") from None

    def wait(self, timeout_s: float, wake_fd: int | None = None) -> None:
        """Block until the device is (probably) ready, wake_fd is readable, or the timeout passes."""
        poller = select.poll()
        for fd, events in self._fds:
            poller.register(fd, events)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        poller.poll(max(0, int(timeout_s * 1000)))

    def close(self) -> None:
        """Close the device; idempotent."""
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            pcm.close()


def pcm_names(direction: Direction) -> list[str]:
    """ALSA PCM names alsa-lib lists for a direction (like `arecord -L` / `aplay -L`)."""
    try:
        return list(alsaaudio.pcms(_TYPES[direction]))
    except alsaaudio.ALSAAudioError as exc:
        raise AudioDeviceError(f"cannot list ALSA devices: {exc}") from None


def sound_cards() -> list[str]:
    """The sound cards the kernel has (what `aplay -l` lists), by ALSA id; empty when there is none."""
    try:
        return [str(card) for card in alsaaudio.cards()]
    except alsaaudio.ALSAAudioError:
        return []
