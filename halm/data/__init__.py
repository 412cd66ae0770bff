"""Data: prepared datasets (prepare, open_dataset), offline corpora (synth), and the audio sources they read
(halm.audio.sources: LibriSpeech, folders, manifests; re-exported here)."""

from halm.audio.sources import (
    SourceError,
    SourceItem,
    folder_source,
    librispeech_source,
    manifest_source,
    open_source,
)
from halm.data.dataset import Item, PreparedDataset, open_dataset

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
