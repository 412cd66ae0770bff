"""Data: sources of audio (LibriSpeech, folders, manifests), offline corpora (synth)."""

from halm.data.dataset import Item, PreparedDataset, open_dataset
from halm.data.sources import (
    SourceError,
    SourceItem,
    folder_source,
    librispeech_source,
    manifest_source,
    open_source,
)

__all__ = [
    "Item",
    "PreparedDataset",
    "open_dataset",
    "SourceError",
    "SourceItem",
    "folder_source",
    "librispeech_source",
    "manifest_source",
    "open_source",
]
