"""Gallery feature extraction with an on-disk, resumable cache.

``build_gallery`` decodes each record's video (guarded, in decoder children), runs the encoder
in batches and stores fp16 features. The cache folder holds one sub-folder per *cache key*
(model fingerprint + sampler settings + decoder, :mod:`.settings`), so a different model or
sampler never reuses features. Inside it:

    shard-<time>-<pid>-<n>.safetensors   one per batch: tensors ``frames`` [B, T, D] and
                                         ``video`` [B, D] (fp16) plus metadata: the entries
                                         (video id, path, size, mtime, quick hash, row or the
                                         skip reason) and a SHA-256 of the tensor bytes
    manifest.json                        settings and shard list (informational)
    report.json, report.txt              the last run's gallery report

An entry is reused only if the file's size, mtime and quick content hash are unchanged (a
touched file, or one replaced by other content of the same size and mtime, is re-extracted);
a shard that fails to load or whose checksum differs is deleted and its videos are recomputed.
Files that cannot be decoded are recorded with their reason (and not retried until they
change). Videos longer than the window threshold (emcl/data/windows.py) are also indexed as
overlapping windows, stored in the same shard as the whole-video row. :mod:`emcl.data.sharding`
runs the extraction over many processes: each writes shards for its part (``part=``, no
compaction) and one merge (``extract=False``) reads them all and writes the manifest.

Modules, by concern: :mod:`.hashing` (file identity, tensor checksums), :mod:`.entry` (the
typed cache entry and its JSON form), :mod:`.shards` (the folder's files: shards, compaction,
manifest), :mod:`.settings` (extraction options, cache key), :mod:`.extract` (decode and
encode), :mod:`.assemble` (the :class:`Gallery`), :mod:`.report` and :mod:`.build` (the
entry points).
"""

from emcl.data.gallery.assemble import Gallery
from emcl.data.gallery.build import (
    add_videos,
    build_galleries,
    build_gallery,
    cache_folder,
    load_gallery,
)
from emcl.data.gallery.entry import CacheEntry, WindowRow
from emcl.data.gallery.extract import VideoEncoder
from emcl.data.gallery.hashing import HASH_HEAD, HASH_SAMPLES, FileStat, file_stat
from emcl.data.gallery.report import GalleryReport
from emcl.data.gallery.settings import BULK_LIMITS, ExtractOptions, cache_key
from emcl.data.gallery.shards import CACHE_VERSION

__all__ = [
    "BULK_LIMITS", "CACHE_VERSION", "HASH_HEAD", "HASH_SAMPLES", "CacheEntry", "ExtractOptions",
    "FileStat", "Gallery", "GalleryReport", "VideoEncoder", "WindowRow", "add_videos",
    "build_galleries", "build_gallery", "cache_folder", "cache_key", "file_stat", "load_gallery",
]  # fmt: skip
