"""Load, resample and save audio.

Arrays are float32 shaped (C, N): channels first, like the codec's (B, C, N) without the batch.
Every failure names the file and says what is wrong, so a batch job can put it in a skip report.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from halm.errors import UserError

SILENCE_PEAK = 1e-4  # peak |x| below this (-80 dBFS) counts as silent-only audio
MAX_PEAK = 64.0  # float audio lies in [-1, 1]; a peak above +36 dBFS is not audio a codec can be asked to encode


class AudioError(UserError):
    """Audio that cannot be used: the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample along the last axis (any leading shape) with soxr (high quality); scipy's polyphase filter if soxr is absent."""
    if orig_sr == new_sr:
        return wav
    if orig_sr <= 0 or new_sr <= 0:
        raise UserError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    try:
        import soxr
    except ImportError:  # pragma: no cover - soxr is a dependency; the fallback is for odd platforms
        from scipy.signal import resample_poly

        g = gcd(orig_sr, new_sr)
        return resample_poly(wav, new_sr // g, orig_sr // g, axis=-1).astype(np.float32)
    if wav.ndim == 1:
        return soxr.resample(wav, orig_sr, new_sr, quality="HQ").astype(np.float32)
    lead = wav.shape[:-1]
    flat = wav.reshape(-1, wav.shape[-1]).T  # soxr wants (N, channels)
    out = soxr.resample(np.ascontiguousarray(flat), orig_sr, new_sr, quality="HQ").T
    return np.ascontiguousarray(out, dtype=np.float32).reshape(*lead, -1)


def mono_at(wav: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Audio (N,) or (C, N) at any rate -> contiguous float32 mono (N',) at target_sr (channels averaged first)."""
    wav = np.asarray(wav, dtype=np.float32)
    return np.ascontiguousarray(resample(wav.mean(0) if wav.ndim == 2 else wav, sr, target_sr))


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = True,
    min_seconds: float = 0.0,
    warn_silent: bool = True,
) -> tuple[np.ndarray, int]:
    """Read wav/flac/ogg (anything libsndfile reads) as float32 (C, N).

    mono: mix channels down to one (C = 1); otherwise keep them.
    sample_rate: resample to this rate (None keeps the file's rate).
    min_seconds: shorter audio raises AudioError (after resampling the duration is unchanged).
    Raises AudioError for a missing, unreadable, empty, non-finite or too-short file; warns
    (AudioWarning) for silent-only audio when warn_silent.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(p, "file not found")
    if p.is_dir():
        raise AudioError(p, "is a directory, not an audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(p, f"unreadable audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(p, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(p, "contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if 1.5 < peak <= 32768.0 and np.array_equal(data, np.round(data)):
        raise AudioError(p, f"integer sample values stored as float (peak {peak:.0f}): rescale to [-1, 1] "
                            "(divide 16-bit values by 32768)")
    if peak > MAX_PEAK:
        raise AudioError(p, f"peak {peak:.3g} is far above full scale (float audio lies in [-1, 1])")
    wav = np.ascontiguousarray(data.T)  # (C, N)
    if mono and wav.shape[0] > 1:
        wav = wav.mean(axis=0, keepdims=True)
    duration = wav.shape[1] / sr
    if duration < min_seconds:
        raise AudioError(p, f"too short: {duration:.3f} s < {min_seconds:.3f} s")
    if warn_silent and float(np.abs(wav).max()) < SILENCE_PEAK:
        warnings.warn(f"{p}: silent-only audio (peak below -80 dBFS)", AudioWarning, stacklevel=2)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


class AudioWarning(UserWarning):
    pass


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write (C, N) or (N,) float audio as WAV, atomically (temp file + rename). Clips to [-1, 1]."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise UserError(f"expected (C, N) or (N,) audio, got shape {wav.shape}")
    data = np.clip(wav, -1.0, 1.0).T  # (N, C)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, data, int(sample_rate), subtype=subtype, format="WAV")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a WAV gets the usual permissions
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
