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
import logging
import os
import secrets
from pathlib import Path
from typing import Optional

from masklab.data_prep.tokenizer import file_sha256

from masklab.errors import CheckpointError

log = logging.getLogger("masklab.checkpoint")
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


ALLOW_FLAG = "--allow-missing-checksums"
_allow_missing = False  # set once by the entry point: the CLI flag or train.allow_missing_checksums
_warned: set[str] = set()


def allow_missing_checksums(on: bool = True) -> None:
    """Let checkpoints without SHA256SUMS.json load (unchecked, with a warning): the CLI's
    --allow-missing-checksums and train.allow_missing_checksums=true call this."""
    global _allow_missing
    _allow_missing = bool(on)


def _inside(ckpt: Path, name: str) -> bool:
    """A manifest entry must name a file inside the checkpoint: relative, no `..`, no symlink out."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    root = ckpt.resolve()
    return (ckpt / name).resolve().is_relative_to(root)


def verify_manifest(ckpt: Path, key: Optional[bytes] = None, only: Optional[list[str]] = None,
                    allow_missing: Optional[bool] = None) -> bool:
    """Check file hashes (all, or the `only` ones) against the manifest; -> whether `key` signed it.

    Raises CheckpointError naming a file that is missing, extra, or altered, or a manifest entry
    that points outside the checkpoint. A checkpoint without SHA256SUMS.json (deleted, or written
    before manifests existed) is refused unless missing checksums are allowed
    (`allow_missing`, else the process-wide switch): then -> False (unsigned), hashes unchecked."""
    ckpt = Path(ckpt)
    path = ckpt / MANIFEST
    if not path.is_file():
        if not (_allow_missing if allow_missing is None else allow_missing):
            raise CheckpointError(f"{ckpt} has no {MANIFEST}: its files cannot be checked (deleted, or a checkpoint "
                                  f"from before checksums); if you trust it, pass {ALLOW_FLAG} "
                                  "(train.allow_missing_checksums=true for training)")
        if str(ckpt) not in _warned:  # once per checkpoint (it is verified per file group)
            _warned.add(str(ckpt))
            log.warning("%s has no %s: loading it unchecked (missing checksums allowed)", ckpt, MANIFEST)
        return False
    try:
        body = json.loads(path.read_text())
        files = dict(body["files"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupted checkpoint file {path}: {e}") from None
    outside = [n for n in files if not _inside(ckpt, n)]
    if outside:
        raise CheckpointError(f"corrupted checkpoint file {path}: entry {outside[0]!r} points outside the checkpoint")
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

