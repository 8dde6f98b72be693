"""Checkpoint integrity: a per-file sha256 manifest, signed with a key only this run directory holds.

`SHA256SUMS.json` = {"files": {relative path: sha256}, "hmac": HMAC-SHA256(run key, files)} is
written into the checkpoint before its COMPLETE marker. The run key (32 random bytes,
`<out_dir>/.masklab_run_key`, mode 0600) is created by the first run in an out_dir. So:
- every load verifies each file's hash (a corrupted or swapped file is an error naming it);
- a checkpoint whose signature verifies with the current out_dir's key was written by this
  run directory (or a copy of it, key included): only such checkpoints may carry formats that
  unpickle (DeepSpeed's optimizer state). A crafted directory cannot forge the signature
  without reading the key, whatever its structure or its recorded paths.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Optional

from masklab.data_prep.tokenizer import file_sha256

from masklab.errors import CheckpointError

MANIFEST = "SHA256SUMS.json"
KEY_FILE = ".masklab_run_key"
_SKIP = {MANIFEST, "COMPLETE", ".masklab-writer"}  # the last: masklab.atomic.MARKER (a temp dir's, never kept)


def run_key(run_dir: Path, create: bool = False) -> Optional[bytes]:
    """The run directory's signing key (created once, readable by its owner only)."""
    path = Path(run_dir) / KEY_FILE
    if not path.is_file():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another rank or process created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
    return path.read_bytes()


def _files(ckpt: Path) -> list[str]:
    return sorted(str(p.relative_to(ckpt)) for p in Path(ckpt).rglob("*")
                  if p.is_file() and str(p.relative_to(ckpt)) not in _SKIP)


def _hashes(ckpt: Path) -> dict:
    return {name: file_sha256(Path(ckpt) / name) for name in _files(ckpt)}


def _sign(key: bytes, files: dict) -> str:
    return hmac.new(key, json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def write_manifest(ckpt: Path, key: Optional[bytes]) -> None:
    files = _hashes(ckpt)
    body = {"files": files, "hmac": _sign(key, files) if key else None}
    (Path(ckpt) / MANIFEST).write_text(json.dumps(body, indent=1))


def verify_manifest(ckpt: Path, key: Optional[bytes] = None, only: Optional[list[str]] = None) -> bool:
    """Check file hashes (all, or the `only` ones) against the manifest; -> whether `key` signed it.

    Raises CheckpointError naming a file that is missing, extra, or altered. A checkpoint
    written before manifests existed has none: -> False (unsigned), hashes unchecked."""
    ckpt = Path(ckpt)
    path = ckpt / MANIFEST
    if not path.is_file():
        return False
    try:
        body = json.loads(path.read_text())
        files = dict(body["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupted checkpoint file {path}: {e}") from None
    if only is not None:
        names = [n for n in only if (ckpt / n).is_file() or n in files]
    else:
        names = sorted(set(files) | set(_files(ckpt)))
    for name in names:
        if name not in files:
            raise CheckpointError(f"corrupted checkpoint file {ckpt / name}: not listed in {MANIFEST}")
        if not (ckpt / name).is_file():
            raise CheckpointError(f"checkpoint file missing: {ckpt / name}")
        if file_sha256(ckpt / name) != files[name]:
            raise CheckpointError(f"corrupted checkpoint file {ckpt / name}: sha256 does not match {MANIFEST}")
    signed = body.get("hmac")
    return bool(key and signed and hmac.compare_digest(_sign(key, files), str(signed)))

