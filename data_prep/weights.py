"""InforMask-style token weights for weighted masking (Sadeq et al. 2022, simplified).

InforMask masks informative tokens more often. Here a token's informativeness is its corpus
self-information -log p(token) (add-one smoothed over the vocabulary), scaled to mean 1 over
the training tokens and clipped to [0.1, 10]: frequent function words are rarely masked,
rare content words often. (The paper's PMI-based "informative relevance" is not computed.)
The Selector turns unit weights into sampling without replacement via exponential / Gumbel
keys. Output: <out>/token_weights.npy (float32 [V]) + <out>/manifest.json (tokenizer sha256).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.atomic import atomic_dir
from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError

FORMAT = "masklab-token-weights-v1"


def build_token_weights(shards_dir: str, out: str, overwrite: bool = False) -> dict:
    shards = ShardSet(shards_dir, "train")
    V = shards.tokenizer.vocab_size
    counts = np.zeros(V, dtype=np.int64)
    for sh in shards.shards:  # streaming: one bincount per shard
        counts += np.bincount(np.asarray(sh.tokens, dtype=np.int64), minlength=V)[:V]
    p = (counts + 1) / (counts.sum() + V)
    info = -np.log(p)
    w = info / (np.dot(counts, info) / max(counts.sum(), 1))
    w = np.clip(w, 0.1, 10.0).astype(np.float32)
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()) and not overwrite:
        raise ConfigError(f"weights output {outp} exists and is not empty (pass --overwrite)")
    manifest = {"format": FORMAT, "tokenizer_sha256": shards.tokenizer.sha256, "vocab_size": V,
                "tokens": int(counts.sum()), "weight": "self-information, mean 1, clipped [0.1, 10]"}
    with atomic_dir(outp) as tmp:
        np.save(tmp / "token_weights.npy", w)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load_token_weights(path: str, tokenizer_sha256: Optional[str] = None, vocab_size: Optional[int] = None) -> np.ndarray:
    """-> float64 [V]; a table made with another tokenizer is a ConfigError."""
    p = Path(path)
    if not (p / "manifest.json").is_file() or not (p / "token_weights.npy").is_file():
        raise ConfigError(f"masking.informask_weights={path} is not a weight table (build one with "
                          "`masklab informask-weights`)")
    m = json.loads((p / "manifest.json").read_text())
    if tokenizer_sha256 is not None and m.get("tokenizer_sha256") != tokenizer_sha256:
        raise ConfigError(f"weight table {path} was built with another tokenizer; rebuild it")
    w = np.load(p / "token_weights.npy").astype(np.float64)
    if vocab_size is not None and len(w) < vocab_size:
        raise ConfigError(f"weight table {path} covers {len(w)} ids, the tokenizer has {vocab_size}")
    return w
