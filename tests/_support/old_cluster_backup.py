"""Cluster RDB backups as autoops wrote them before one data file per master, made from a new
one: for the test that they still restore, and for the benchmark that compares the two."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import zstandard

import autoops


def framed_copy(backup: autoops.Backup, root: Path) -> str:
    """The backup rewritten as autoops wrote Cluster RDB backups before one file per master:
    one ``cluster-rdb`` file of frames (F: a piece of master n's RDB, D: master n done, E: end)
    and a version 1 manifest. Returns the old backup's id."""
    frames = [b"AUTOOPS-CLUSTER-RDB 1\n"]
    for number, data_file in enumerate(backup.files):
        rdb = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress((root / data_file.name).read_bytes())
        )
        for start in range(0, len(rdb), 1 << 16):
            piece = rdb[start : start + (1 << 16)]
            frames.append(b"F" + number.to_bytes(2, "big") + len(piece).to_bytes(4, "big") + piece)
        frames.append(b"D" + number.to_bytes(2, "big") + bytes(4))
    frames.append(b"E" + len(backup.files).to_bytes(2, "big") + bytes(4))
    raw = b"".join(frames)
    stored = zstandard.ZstdCompressor().compress(raw)
    old_id = backup.id.replace("redis-", "redis-old-", 1)
    old_file = f"{old_id}.cluster-rdb.zst"
    (root / old_file).write_bytes(stored)
    manifest = json.loads(backup.to_json())
    del manifest["files"]
    manifest.update(
        manifest_version=1,
        id=old_id,
        data_file=old_file,
        format="cluster-rdb",
        size=len(stored),
        raw_size=len(raw),
        sha256=hashlib.sha256(stored).hexdigest(),
    )
    (root / f"{old_id}.manifest.json").write_text(json.dumps(manifest))
    return old_id
