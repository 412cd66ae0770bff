"""A small ctypes binding to espeak-ng, as bundled by the PyPI package `espeakng-loader`.

espeak-ng keeps global state, so one `ESpeak` per process (see `get_espeak`). Its output depends on
an internal random seed *and* on state left by earlier utterances (pitch-flutter phase and the
like; measured: the same text and voice twice in a row differ). So that clip i of a corpus is the
same whether a run starts at clip 0 or resumes at clip i, each utterance is spoken in a forked
child of a process that has initialised espeak but never spoken, with the seed set first. Where
fork is unavailable (Windows) it speaks in-process: deterministic for a whole run, not per clip.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

import numpy as np

from halm.errors import UserError

AUDIO_OUTPUT_SYNCHRONOUS = 2  # no background thread: safe to fork
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
# espeak_PARAMETER
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class ESpeak:
    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover
            raise RuntimeError("speech synthesis needs the package espeakng-loader: pip install espeakng-loader") from e
        self.data_path = Path(espeakng_loader.get_data_path())
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        sr = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if sr <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {self.data_path})")
        self.sample_rate = int(sr)
        self._chunks: list[np.ndarray] = []

        def _collect(wav, n, events):  # called by espeak with int16 samples
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _SynthCallback(_collect)  # keep a reference: espeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def english_voices(self) -> list[str]:
        """English language voices found in the data folder (e.g. 'en-us', 'en-gb-scotland')."""
        names = sorted(p.name.lower() for p in (self.data_path / "lang" / "gmw").iterdir() if p.name.lower().startswith("en"))
        return [n for n in names if n != "en-shaw"]  # Shavian spelling: not for Latin-script text

    def variants(self) -> list[str]:
        """Voice variants (timbre presets such as 'f3', 'm2', 'klatt') found in the data folder."""
        return sorted(p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file())

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, volume: int = 100,
              seed: int = 0) -> np.ndarray:
        """Speak text; returns float32 mono audio at self.sample_rate (see the module docstring)."""
        if not hasattr(os, "fork"):
            return self._synth_here(text, voice, rate, pitch, pitch_range, volume, seed)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak, send the samples (or the error), exit without cleanup handlers
            code = 0
            try:
                os.close(read_fd)
                try:
                    payload = b"A" + self._synth_here(text, voice, rate, pitch, pitch_range, volume, seed).tobytes()
                except Exception as e:  # noqa: BLE001 - report any failure to the parent
                    payload = b"E" + str(e).encode()
                with os.fdopen(write_fd, "wb") as f:
                    f.write(struct.pack("<Q", len(payload)) + payload)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if len(data) < 9 or os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"espeak-ng worker failed for voice {voice!r} (status {status})")
        (n,) = struct.unpack("<Q", data[:8])
        payload = data[8: 8 + n]
        if payload[:1] == b"E":
            raise RuntimeError(payload[1:].decode())
        return np.frombuffer(payload[1:], dtype=np.float32).copy()

    def _synth_here(self, text, voice, rate, pitch, pitch_range, volume, seed) -> np.ndarray:
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range), (VOLUME, volume)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        err = self.lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak-ng synthesis failed (error {err}) for {text!r}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


_ESPEAK: ESpeak | None = None


def get_espeak() -> ESpeak:
    global _ESPEAK
    if _ESPEAK is None:
        _ESPEAK = ESpeak()
    return _ESPEAK
