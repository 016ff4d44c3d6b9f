"""speexdsp echo canceller (MDF adaptive filter + residual-echo suppressor) over ctypes.

Binds the system ``libspeexdsp.so.1`` (Debian ``libspeexdsp1``) directly: nothing to compile, and unlike the
PyPI bindings it links the canceller to speex's preprocessor, whose residual-echo suppression adds 10-15 dB.
"""

from __future__ import annotations

import ctypes
import logging
import weakref

import numpy as np

from vatel_edge.audio.format import AudioFormat

log = logging.getLogger(__name__)

_LIBRARY = "libspeexdsp.so.1"

# speex/speex_echo.h and speex/speex_preprocess.h
_ECHO_SET_SAMPLING_RATE = 24
_PREPROCESS_SET_DENOISE = 0
_PREPROCESS_SET_NOISE_SUPPRESS = 18
_PREPROCESS_SET_ECHO_SUPPRESS = 20
_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22
_PREPROCESS_SET_ECHO_STATE = 24

_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    """Load libspeexdsp once and declare the prototypes used here; OSError/AttributeError if unusable."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(_LIBRARY)
        p, i = ctypes.c_void_p, ctypes.c_int
        for name, restype, argtypes in (
            ("speex_echo_state_init", p, [i, i]),
            ("speex_echo_state_destroy", None, [p]),
            ("speex_echo_state_reset", None, [p]),
            ("speex_echo_ctl", i, [p, i, p]),
            ("speex_echo_cancellation", None, [p, p, p, p]),
            ("speex_preprocess_state_init", p, [i, i]),
            ("speex_preprocess_state_destroy", None, [p]),
            ("speex_preprocess_ctl", i, [p, i, p]),
            ("speex_preprocess_run", i, [p, p]),
        ):
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        _lib = lib
    return _lib


def available() -> bool:
    """True if libspeexdsp loads here with the echo-cancellation entry points."""
    try:
        _load()
    except (OSError, AttributeError) as exc:
        log.debug("speexdsp not usable: %s", exc)
        return False
    return True


def _destroy(lib: ctypes.CDLL, echo: int, pre: int) -> None:
    lib.speex_preprocess_state_destroy(pre)
    lib.speex_echo_state_destroy(echo)


class SpeexEchoCanceller:
    """speex MDF canceller with a `tail_ms` filter, then the preprocessor's residual-echo (and noise) suppression.

    The suppressor only acts with speex denoising on; `noise_suppress_db` is kept mild so the user's voice
    is left alone. `echo_suppress_db` / `echo_suppress_active_db` are speex's own defaults.
    """

    name = "speex"

    def __init__(
        self,
        fmt: AudioFormat,
        frame_ms: int,
        *,
        tail_ms: int = 200,
        noise_suppress_db: int = -15,
        echo_suppress_db: int = -40,
        echo_suppress_active_db: int = -15,
    ) -> None:
        if fmt.channels != 1 or fmt.width != 2:
            raise ValueError("SpeexEchoCanceller takes PCM16 mono")
        self._lib = _load()
        self._n = fmt.samples(frame_ms)
        self._nbytes = fmt.nbytes(frame_ms)
        self._rate = fmt.rate
        self._tail = fmt.samples(tail_ms)
        self._settings = (noise_suppress_db, echo_suppress_db, echo_suppress_active_db)
        self._echo: int | None = None
        self._pre: int | None = None
        self._finalizer: weakref.finalize[[ctypes.CDLL, int, int], SpeexEchoCanceller] | None = None
        self._create()

    def _create(self) -> None:
        lib = self._lib
        echo = lib.speex_echo_state_init(self._n, self._tail)
        pre = lib.speex_preprocess_state_init(self._n, self._rate)
        if not echo or not pre:
            raise MemoryError("speexdsp could not allocate its state")
        rate = ctypes.c_int(self._rate)
        lib.speex_echo_ctl(echo, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        lib.speex_preprocess_ctl(pre, _PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(echo))
        noise, sup, sup_active = self._settings
        for request, value in (
            (_PREPROCESS_SET_DENOISE, 1),
            (_PREPROCESS_SET_NOISE_SUPPRESS, noise),
            (_PREPROCESS_SET_ECHO_SUPPRESS, sup),
            (_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE, sup_active),
        ):
            arg = ctypes.c_int(value)
            lib.speex_preprocess_ctl(pre, request, ctypes.byref(arg))
        self._echo, self._pre = int(echo), int(pre)
        # frees the C state if the owner forgets close(); close() runs it deterministically
        self._finalizer = weakref.finalize(self, _destroy, lib, self._echo, self._pre)

    def process(self, mic: bytes, ref: bytes) -> bytes:
        if len(mic) != self._nbytes or len(ref) != self._nbytes:
            raise ValueError(f"echo canceller expects {self._nbytes}-byte frames, got {len(mic)} and {len(ref)}")
        if self._echo is None:
            raise RuntimeError("echo canceller is closed")
        near = np.frombuffer(mic, dtype="<i2").astype(np.int16)  # native order, contiguous, owned
        far = np.frombuffer(ref, dtype="<i2").astype(np.int16)
        out = np.empty(self._n, dtype=np.int16)
        self._lib.speex_echo_cancellation(self._echo, near.ctypes.data, far.ctypes.data, out.ctypes.data)
        self._lib.speex_preprocess_run(self._pre, out.ctypes.data)
        return out.astype("<i2").tobytes()

    def reset(self) -> None:
        """Forget the echo path and the suppressor's estimates (the preprocessor has no reset: rebuilt)."""
        if self._echo is None:
            return
        self.close()
        self._create()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._echo = self._pre = None
