"""The encoder base class: texts -> token chunks -> length-sorted batches -> pooled, chunk-reduced
float32 embeddings. Long inputs are truncated, or split into chunks that are embedded separately
and reduced by `chunk_reduce` (mean or max). The backends (`encoder_backends.py`) supply the
tokenizer and the forward pass."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from masklab.downstream.encoders.pooling import POOLINGS
from masklab.errors import MaskLabError


class Encoder(abc.ABC):
    """Base: tokenisation into chunks, length-sorted batching, pooling, chunk reduction.

    Subclasses implement `_content_ids(texts)` (ids without special tokens), `_wrap(ids)`
    (add [CLS]/[SEP] or the model's equivalent) and `_embed(seqs) -> [b, D]`.
    """

    kind = ""

    def __init__(self, path: str, pooling: str = "mean", max_length: Optional[int] = None,
                 long_mode: str = "truncate", chunk_reduce: str = "mean", batch_size: int = 32,
                 device: Optional[str] = None, normalize: bool = False, random_init: bool = False, seed: int = 0):
        if pooling not in POOLINGS:
            raise MaskLabError(f"pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
        if long_mode not in ("truncate", "chunk") or chunk_reduce not in ("mean", "max"):
            raise MaskLabError("long_mode must be truncate|chunk and chunk_reduce mean|max")
        self.path, self.pooling, self.long_mode, self.chunk_reduce = str(path), pooling, long_mode, chunk_reduce
        self.batch_size, self.normalize, self.random_init, self.seed = batch_size, bool(normalize), random_init, seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_length = max_length  # resolved against the model by subclasses
        self.dim = 0

    # -- subclass hooks -------------------------------------------------------------
    @abc.abstractmethod
    def _content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""

    @abc.abstractmethod
    def _wrap(self, ids: list[int]) -> list[int]:
        """Ids with the model's special tokens around them."""

    def _num_special(self) -> int:
        return len(self._wrap([]))

    @abc.abstractmethod
    def _embed(self, seqs: list[list[int]]) -> torch.Tensor:
        """Pooled embeddings [len(seqs), dim] fp32 of already-wrapped sequences."""

    # -- public -----------------------------------------------------------------------
    def spec(self) -> dict:
        """Everything needed to rebuild this encoder exactly (stored in meta.json and bundles):
        the resolved weights file and its sha256, random_init + seed, and every embedding setting."""
        from masklab.downstream.encoders.source import sha256, weights_file

        w = weights_file(self.path, "masklab" if self.kind == "masklab" else "hf")
        return {"kind": self.kind, "path": str(Path(self.path).resolve()), "weights": str(w.resolve()),
                "weights_sha256": sha256(w), "random_init": self.random_init, "seed": self.seed,
                "pooling": self.pooling, "max_length": self.max_length, "long_mode": self.long_mode,
                "chunk_reduce": self.chunk_reduce, "normalize": self.normalize}

    def chunks(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """-> (token id sequences with special tokens, owner [n_chunks] = index of the text)."""
        cap = self.max_length - self._num_special()
        seqs, owner = [], []
        for i, ids in enumerate(self._content_ids(list(texts))):
            if self.long_mode == "truncate" or len(ids) <= cap:
                pieces = [ids[:cap]]
            else:
                pieces = [ids[s:s + cap] for s in range(0, len(ids), cap)]
            seqs += [self._wrap(p) for p in pieces]
            owner += [i] * len(pieces)
        return seqs, np.asarray(owner, dtype=np.int64)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """N texts -> float32 [N, D]. Batches are formed by length (less padding), order restored."""
        from tqdm.auto import tqdm

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        seqs, owner = self.chunks(texts)
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        pooled = np.zeros((len(seqs), self.dim), dtype=np.float32)
        starts = range(0, len(seqs), self.batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc=f"embed ({self.kind})", disable=not progress, unit="batch"):
                idx = order[s:s + self.batch_size]
                pooled[idx] = self._embed([seqs[i] for i in idx]).float().cpu().numpy()
        out = self._reduce_chunks(pooled, owner, len(texts))
        if self.normalize:  # unit rows, as a sentence-transformers Normalize module
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise MaskLabError(f"embeddings of {int(bad.sum())} of {len(texts)} inputs are NaN/inf (first: row "
                               f"{int(np.argmax(bad))}); the model at {self.path} looks diverged or corrupted")
        return out

    def _reduce_chunks(self, pooled: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
        if len(owner) == n:  # one chunk per text
            return pooled
        out = np.zeros((n, pooled.shape[1]), dtype=np.float32)
        if self.chunk_reduce == "mean":
            np.add.at(out, owner, pooled)
            return out / np.bincount(owner, minlength=n)[:, None]
        out[:] = -np.inf
        np.maximum.at(out, owner, pooled)
        return out
