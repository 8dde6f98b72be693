"""Shard verification whose start-up cost does not grow with the corpus.

Two levels:
- full (`masklab verify DATA`, or the first open of a data directory never verified): sha256 of
  every shard file against the manifest. Its result is recorded in a stamp, `verified.json`
  beside the manifest (or under ~/.cache/masklab/verified/ when the data directory is read-only):
  per file its size, mtime_ns and the sha256 of a few sampled 4 KiB blocks, plus the manifest's
  content digest.
- quick (every training start, each rank and split): the .npy header of every shard file must
  agree with the manifest's counts and with the file size (a truncated or re-shaped file fails
  here); a file whose size or mtime differs from its stamp is re-hashed in full (so an edited
  file is always caught, and a legitimately re-verified one is re-stamped); otherwise the sampled
  blocks are re-hashed (8 blocks per file: first, last and 6 at offsets fixed by the file name),
  which catches in-place corruption that kept the mtime when it hits a sampled block.
Cost of a quick check: a stat, a header read and 32 KiB per shard file, whatever the shard sizes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from masklab.data_prep.tokenizer import file_sha256
from masklab.errors import DataError

STAMP = "verified.json"
SHARD_FILES = ("tokens.npy", "word_starts.npy", "doc_offsets.npy")
BLOCK = 4096
N_BLOCKS = 8


def content_digest(manifest: dict) -> str:
    """sha256 of what decides the samples: tokenizer and every shard's name, counts and file hashes
    (not the creation time or the source path, so an identical re-prep gives the same digest)."""
    keep = {"tokenizer": manifest.get("tokenizer"), "tokenizer_file_sha256": manifest.get("tokenizer_file_sha256"),
            "splits": {s: [{k: e[k] for k in ("name", "documents", "tokens", "sha256")} for e in entries]
                       for s, entries in sorted(manifest["splits"].items())}}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _block_offsets(name: str, size: int) -> list[int]:
    """Deterministic sample of block offsets for a file of `size` bytes."""
    last = max(0, size - BLOCK)
    h = hashlib.sha256(name.encode()).digest()
    mids = [int.from_bytes(h[4 * i:4 * i + 4], "little") % (last + 1) for i in range(N_BLOCKS - 2)]
    return sorted({0, last, *mids})


def _sampled_hash(path: Path, rel: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for off in _block_offsets(rel, os.fstat(f.fileno()).st_size):
            f.seek(off)
            h.update(f.read(BLOCK))
    return h.hexdigest()


def _stamp_paths(root: Path) -> list[Path]:
    """Where a stamp may live: beside the manifest, else a per-directory cache file."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return [root / STAMP, Path.home() / ".cache" / "masklab" / "verified" / f"{key}.json"]


def read_stamp(root: Path, digest: str) -> dict:
    """-> {relative path: {size, mtime_ns, sampled}} of a stamp for this manifest digest, or {}."""
    for p in _stamp_paths(root):
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and s.get("digest") == digest and isinstance(s.get("files"), dict):
            return s["files"]
    return {}


def write_stamp(root: Path, digest: str, files: dict) -> None:
    """Atomic (temp + rename); best effort: an unwritable location only costs a full hash next time."""
    text = json.dumps({"digest": digest, "files": files}, indent=0, sort_keys=True)
    for p in _stamp_paths(root):
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, p)
            return
        except OSError:
            tmp.unlink(missing_ok=True)


def _stamp_entry(path: Path, rel: str) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sampled": _sampled_hash(path, rel)}


def _full_check(path: Path, want: str, manifest_path: Path) -> None:
    if file_sha256(path) != want:
        raise DataError(f"checksum mismatch for {path}: the file does not match {manifest_path} "
                        "(corrupted or modified; re-run `masklab prep`)")


def _check_header(path: Path, shape: tuple) -> None:
    """The .npy header must give `shape` and the file must hold exactly that many bytes of data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got, _, dtype = read(f)
            data_start = f.tell()
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read shard file {path}: {e}") from None
    expect = data_start + int(np.prod(shape)) * dtype.itemsize
    if tuple(got) != shape or path.stat().st_size != expect:
        raise DataError(f"shard file {path} is truncated or does not match the manifest (shape {tuple(got)}, "
                        f"{path.stat().st_size} bytes; manifest says shape {shape}, {expect} bytes): re-run `masklab prep`")


def shard_files(root: Path, manifest: dict, split: str):
    """-> [(relative path, absolute path, sha256, expected shape)] of one split's shard files."""
    out = []
    for e in manifest["splits"][split]:
        shapes = {"tokens.npy": (e["tokens"],), "word_starts.npy": (e["tokens"],),
                  "doc_offsets.npy": (e["documents"] + 1,)}
        for f in SHARD_FILES:
            rel = f"{split}/{e['name']}/{f}"
            p = root / rel
            if not p.is_file():
                raise DataError(f"shard file missing: {p}")
            out.append((rel, p, e["sha256"][f], shapes[f]))
    return out


def verify_tokenizer(root: Path, manifest: dict) -> None:
    """The tokenizer beside the shards is the one they were tokenized with (a small file: always hashed)."""
    want = manifest.get("tokenizer_file_sha256")
    f = root / "tokenizer" / "tokenizer.json"
    if want and (not f.is_file() or file_sha256(f) != want):
        raise DataError(f"{f} is missing or is not the tokenizer these shards were made with (sha256 differs from "
                        f"{root / 'manifest.json'}): restore it or re-run `masklab prep`")


def verify_bindings(root: Path, manifest: dict) -> None:
    """Every shard names the tokenizer and corpus it was encoded from (merge.py): they must be the
    manifest's own (shards of another prep mixed in are refused). Manifests made before issue 35
    carry no bindings: nothing to compare."""
    tok, corpus = manifest.get("tokenizer_file_sha256"), manifest.get("corpus_fingerprint")
    for split, entries in manifest["splits"].items():
        for e in entries:
            for key, want in (("tokenizer_sha256", tok), ("corpus_fingerprint", corpus)):
                if key in e and e[key] != want:
                    raise DataError(f"{root / split / e['name']} was encoded for another {key.split('_')[0]} "
                                    f"({key} {str(e[key])[:16]}..., the manifest's is {str(want)[:16]}...): "
                                    "shards of two preps are mixed; re-run `masklab prep`")


def verify_split(root: Path, manifest: dict, split: str, full: bool = False) -> str:
    """Check one split (see the module doc). -> 'full' or 'quick': what was done for it."""
    digest = content_digest(manifest)
    verify_bindings(root, manifest)
    stamp = {} if full else read_stamp(root, digest)
    mpath = root / "manifest.json"
    files = shard_files(root, manifest, split)
    changed = False
    for rel, p, sha, shape in files:
        _check_header(p, shape)
        st = p.stat()
        old = stamp.get(rel)
        if old and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns:
            if _sampled_hash(p, rel) != old["sampled"]:
                raise DataError(f"checksum mismatch for {p}: sampled blocks differ from the last verification "
                                "(corrupted in place; run `masklab verify` for a full check, or re-run `masklab prep`)")
            continue
        _full_check(p, sha, mpath)
        stamp[rel] = _stamp_entry(p, rel)
        changed = True
    if changed:  # keep the other split's entries of an existing stamp
        write_stamp(root, digest, {**read_stamp(root, digest), **stamp})
    return "full" if changed else "quick"


def stamp_new_prep(root: Path, manifest: dict) -> None:
    """Record a prep's own output as verified: its manifest sha256s were computed while the shards
    were written, so the first training start does the quick check, not a full re-hash."""
    files = {}
    for split in manifest["splits"]:
        for rel, p, _, shape in shard_files(root, manifest, split):
            _check_header(p, shape)
            files[rel] = _stamp_entry(p, rel)
    text = json.dumps({"digest": content_digest(manifest), "files": files}, indent=0, sort_keys=True)
    (root / STAMP).write_text(text)
