"""Audio I/O, the causal log-mel front-end, and the readers of audio on disk (sources)."""

from halm.audio.io import AudioError, load_audio, mono_at, resample, save_audio
from halm.audio.mel import MelConfig, causal_log_mel, mel_filterbank, n_codec_frames

__all__ = [
    "AudioError",
    "MelConfig",
    "causal_log_mel",
    "load_audio",
    "mel_filterbank",
    "mono_at",
    "n_codec_frames",
    "resample",
    "save_audio",
]
