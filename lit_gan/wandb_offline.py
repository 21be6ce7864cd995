"""Read an offline W&B run (``run-<id>.wandb``) back from disk, without a server.

The file is a LevelDB-style log: 32 KiB blocks of chunks, each with a 7-byte
header (CRC32C, little-endian length, type FULL/FIRST/MIDDLE/LAST), after a
7-byte file header ``:W&B``, 0xBEE1, version 0. Each reassembled record is a
``wandb_internal_pb2.Record`` protobuf message.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    """Yield every ``Record`` stored in a ``.wandb`` file (or the one in an ``offline-run-*`` folder), in order."""
    from wandb.proto import wandb_internal_pb2

    path = find_run_file(path) if Path(path).is_dir() else Path(path)  # the folder a finished run prints
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER_SIZE])
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path} is not a W&B run file (header {data[:HEADER_SIZE]!r})")
    position, pending = HEADER_SIZE, b""
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # the writer pads block tails too short for a header
            position += left_in_block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + HEADER_SIZE])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            position += left_in_block
            continue
        if position + HEADER_SIZE + length > len(data):  # a run killed (or still writing) mid-record: the
            return                                      # records before it are whole
        chunk = data[position + HEADER_SIZE:position + HEADER_SIZE + length]
        position += HEADER_SIZE + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _items(items) -> dict:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json) if item.value_json else None
    return out


def read_run(path: str | Path) -> dict:
    """``{"history": [row, ...], "config": {...}, "summary": {...}, "alerts": [...]}`` of one offline run
    (its ``run-*.wandb`` file, or the ``offline-run-*`` folder holding it).

    Alerts (``run.alert``) are ``{"title", "text", "level"}``; W&B sends them when the run is synced.
    """
    history, config, summary, alerts = [], {}, {}, []
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(_items(record.history.item))
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "run":
            config.update(_items(record.run.config.update))
        elif kind == "alert":
            alerts.append({"title": record.alert.title, "text": record.alert.text, "level": record.alert.level})
    return {"history": history, "config": config, "summary": summary, "alerts": alerts}


def find_run_file(run_dir: str | Path) -> Path:
    """The ``run-<id>.wandb`` file inside an ``offline-run-*`` folder."""
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    return files[0]
