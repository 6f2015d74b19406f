"""Read an offline W&B run back (its ``run-*.wandb`` file) for the tests.

wandb >= 0.20 has no Python reader for its transaction log any more (it moved into wandb-core), so
this reads the framing itself: a 7-byte header (``:W&B``, magic, version), then LevelDB-log blocks
of 32 KiB holding records (crc32, length, type: full / first / middle / last) whose payloads are
``wandb_internal_pb2.Record`` protobufs (the same messages ``wandb sync`` uploads).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, buf = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # full, last
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path, timeout: float = 60.0) -> dict:
    """{"run": run record, "config": {...}, "history": [rows], "summary": {...}, "exit_code": int}.

    wandb-core (a separate process) may still be writing the log when the run's process has
    returned from ``finish()`` (seen on a loaded machine): read until the exit record is there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            out = _read_once(run_dir)
        except Exception:  # a record cut off mid-write
            if time.monotonic() > deadline:
                raise
            out = {"run": None, "exit_code": None}
        if out["exit_code"] is not None and out["run"] is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _read_once(run_dir: Path) -> dict:
    (log_file,) = Path(run_dir).glob("run-*.wandb")
    out: dict = {"run": None, "config": {}, "history": [], "summary": {}, "exit_code": None}
    for r in records(log_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out
