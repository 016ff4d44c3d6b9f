"""Streaming rational resampler: Kaiser-windowed-sinc polyphase filter in numpy, int16 mono in and out.

For in_rate -> out_rate with L/M = out/in in lowest terms, the prototype low-pass runs at in_rate * L
and cuts at 0.46 * min(in_rate, out_rate) with ~80 dB stopband from the lower Nyquist on; each output
sample takes one polyphase branch of K taps. State (the last K-1 inputs and the output phase) carries
across calls, so frame-by-frame output equals whole-signal output.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

STOPBAND_DB = 80.0
CUTOFF = 0.458  # of the lower of the two rates: 11 kHz for 24 kHz (passband 10 kHz within 0.1 dB)
TRANSITION = 0.083  # of the lower rate: stopband from ~12 kHz for 24 kHz

Int16Array = npt.NDArray[np.int16]


def design_lowpass(in_rate: int, out_rate: int) -> tuple[npt.NDArray[np.float64], int, int]:
    """The polyphase bank (L rows x K taps), L and M for in_rate -> out_rate."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    proto_rate = in_rate * up
    low = min(in_rate, out_rate)
    cutoff = CUTOFF * low / proto_rate  # cycles per prototype sample
    width = TRANSITION * low / proto_rate
    ntaps = math.ceil((STOPBAND_DB - 7.95) / (14.36 * width))
    taps_per_phase = max(8, math.ceil(ntaps / up))
    ntaps = taps_per_phase * up
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    n = np.arange(ntaps) - (ntaps - 1) / 2.0
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(ntaps, beta)
    h *= up / h.sum()  # unity DC gain after zero-stuffing by `up`
    bank = h.reshape(taps_per_phase, up).T.copy()  # bank[p, k] = h[p + k*up]
    return bank, up, down


class Resampler:
    """Streaming int16 mono resampler; `process` may be called with blocks of any length."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.passthrough = in_rate == out_rate
        if self.passthrough:
            return
        self._bank, self._up, self._down = design_lowpass(in_rate, out_rate)
        self._taps = self._bank.shape[1]
        # integer decimation (up == 1): the taps of each of the `down` phases
        self._phases = [self._bank[0, p :: self._down].copy() for p in range(self._down)] if self._up == 1 else []
        self._hist = np.zeros(self._taps - 1, dtype=np.float64)
        self._consumed = 0  # inputs seen so far (absolute index of the next input)
        self._next_out = 0  # absolute index of the next output sample

    @property
    def delay_s(self) -> float:
        """Group delay of the filter in seconds."""
        if self.passthrough:
            return 0.0
        return float((self._taps * self._up - 1) / 2.0 / (self.in_rate * self._up))

    def output_counts(self, lengths: list[int]) -> list[int]:
        """How many samples `process` would return for consecutive blocks of these lengths (state unchanged):
        for attributing the output of one call over a batch to the blocks it joined."""
        if self.passthrough:
            return list(lengths)
        counts = []
        consumed, next_out = self._consumed, self._next_out
        for n in lengths:
            consumed += n
            end = ((consumed - 1) * self._up + self._up - 1) // self._down
            count = max(0, end - next_out + 1)
            counts.append(count)
            next_out += count
        return counts

    def process(self, x: npt.NDArray[np.int16]) -> Int16Array:
        """Resample the next block of the stream."""
        if self.passthrough:
            return np.asarray(x, dtype=np.int16).copy()
        x = np.asarray(x, dtype=np.int16)
        buf = np.concatenate([self._hist, x.astype(np.float64)])
        base = self._consumed - (self._taps - 1)  # absolute input index of buf[0]
        self._consumed += len(x)
        last = self._consumed - 1
        up, down = self._up, self._down
        end = (last * up + up - 1) // down  # last output index whose newest input is available
        count = max(0, end - self._next_out + 1)
        if count and up == 1:
            # Integer decimation (48->24, 24->8 kHz), polyphase: only the outputs kept are computed, as `down`
            # short convolutions of every down-th input with every down-th tap (a full-rate convolution that
            # drops all but every down-th output computes `down` times as many: measured 40 -> 30 us for a 20 ms
            # frame, 29 -> 18 us a frame over 60 ms blocks, 24 -> 8 kHz)
            start = self._next_out * down - base - (self._taps - 1)
            y = np.zeros(count)
            for p, taps in enumerate(self._phases):
                q = taps.size - 1
                at = start + self._taps - 1 - p - down * q
                y += np.convolve(buf[at : at + down * (count + q) : down], taps, mode="valid")
            self._next_out += count
        elif count:
            t = (self._next_out + np.arange(count, dtype=np.int64)) * down
            idx = t // up - base
            phase = t % up
            frames = buf[idx[:, None] - np.arange(self._taps)[None, :]]
            y = np.einsum("ij,ij->i", frames, self._bank[phase])
            self._next_out += count
        else:
            y = np.zeros(0)
        self._hist = buf[len(buf) - (self._taps - 1) :].copy()
        out: Int16Array = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return out


def to_mono(samples: npt.NDArray[np.int16], channels: int, channel: int | None) -> Int16Array:
    """Interleaved int16 -> mono: pick `channel`, or average all channels when channel is None."""
    if channels == 1:
        return samples
    frames = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    if channel is None:
        mean: Int16Array = np.clip(np.rint(frames.mean(axis=1)), -32768, 32767).astype(np.int16)
        return mean
    picked: Int16Array = frames[:, min(channel, channels - 1)].copy()
    return picked


def to_channels(mono: npt.NDArray[np.int16], channels: int) -> Int16Array:
    """Mono int16 -> interleaved, the same signal on every channel."""
    if channels == 1:
        return mono
    return np.repeat(mono, channels)
