"""Data: sources of audio (LibriSpeech, folders, manifests), offline corpora (synth)."""

from halm.data.sources import (
    SourceError,
    SourceItem,
    folder_source,
    librispeech_source,
    manifest_source,
    open_source,
)

__all__ = [
    "SourceError",
    "SourceItem",
    "folder_source",
    "librispeech_source",
    "manifest_source",
    "open_source",
]
