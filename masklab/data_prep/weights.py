"""InforMask token weights for weighted masking (`masklab informask-weights`), two scores:

- pmi (the paper, Sadeq et al. 2022; data_prep.informask): token-specific masking rates from
  PMI-based informative relevance, one pass over the corpus; weight = rate(x) / mean rate over
  the training tokens;
- surprisal: self-information -log p(x) (add-one smoothed), scaled to mean 1 over the training
  tokens and clipped to [0.1, 10].
Both are mean-1 weights over the training tokens; special ids weigh 0. `masking.informask_score`
picks one. The Selector uses them as per-token Bernoulli probabilities min(1, rate * weight)
(selector=bernoulli: the paper's token-specific rates at rate = the build rate) or as the
order of weighted sampling without replacement under the exact budget (selector=budget).
Output: <out>/token_weights_{pmi,surprisal}.npy (float32 [V]) + <out>/manifest.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from masklab.atomic import atomic_dir, refuse_overlap
from masklab.data_prep.informask import corpus_arrays, informative_relevance, token_rates
from masklab.data_prep.shards import ShardSet
from masklab.errors import ConfigError

# v2: both scores (v1 held surprisal only); v3: the best-of-N search shares one budget rounding per
# document (v2's pmi rates were biased upwards, 0.155 instead of 0.15 on pydoc). A resume across the
# change is refused by masking_compat's masking.informask_table key.
FORMAT = "masklab-token-weights-v3"
SCORES = ("pmi", "surprisal")


def surprisal_weights(counts: np.ndarray) -> np.ndarray:
    """counts int64 [V] -> float64 [V]: -log p, mean 1 over the tokens, clipped to [0.1, 10]."""
    V = len(counts)
    info = -np.log((counts + 1) / (counts.sum() + V))
    return np.clip(info / (np.dot(counts, info) / max(counts.sum(), 1)), 0.1, 10.0)


def build_token_weights(shards_dir: str, out: str, overwrite: bool = False, rate: float = 0.15, seed: int = 0) -> dict:
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"informask-weights --rate={rate} must lie in (0, 1)")
    refuse_overlap(out, {"--shards": shards_dir})
    outp = Path(out)
    if outp.exists() and any(outp.iterdir()) and not overwrite:
        raise ConfigError(f"weights output {outp} exists and is not empty (pass --overwrite)")
    shards = ShardSet(shards_dir, "train")
    V = shards.tokenizer.vocab_size
    tokens, docs = corpus_arrays(shards)
    maskable = np.ones(V, dtype=bool)
    maskable[[i for i in shards.tokenizer.special_ids if i < V]] = False
    counts = np.bincount(tokens, minlength=V)[:V] * maskable
    rates, occ = token_rates(tokens, docs, informative_relevance(tokens, docs, V), maskable, V, rate, seed)
    mean_rate = float(np.dot(occ, rates) / max(occ.sum(), 1))
    weights = {"pmi": rates / max(mean_rate, 1e-12), "surprisal": surprisal_weights(counts) * maskable}
    manifest = {"format": FORMAT, "tokenizer_sha256": shards.tokenizer.sha256, "vocab_size": V,
                "tokens": int(counts.sum()), "documents": int(docs.max()) + 1 if len(docs) else 0,
                "pmi": {"build_rate": rate, "realised_rate": round(mean_rate, 6), "seed": seed,
                        "weight": "token-specific InforMask rate / mean rate"},
                "surprisal": {"weight": "self-information, mean 1, clipped [0.1, 10]"}}
    with atomic_dir(outp) as tmp:
        for s, w in weights.items():
            np.save(tmp / f"token_weights_{s}.npy", w.astype(np.float32))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load_token_weights(path: str, score: str = "pmi", tokenizer_sha256: Optional[str] = None,
                       vocab_size: Optional[int] = None) -> np.ndarray:
    """-> float64 [V] of one score; a table of another tokenizer or format is a ConfigError."""
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise ConfigError(f"masking.informask_weights={path} is not a weight table (build one with "
                          "`masklab informask-weights`)")
    m = json.loads((p / "manifest.json").read_text())
    if m.get("format") != FORMAT:
        raise ConfigError(f"weight table {path}: format '{m.get('format')}' is not {FORMAT} (older tables have "
                          "no PMI score or biased PMI rates); rebuild it with `masklab informask-weights`")
    if tokenizer_sha256 is not None and m.get("tokenizer_sha256") != tokenizer_sha256:
        raise ConfigError(f"weight table {path} was built with another tokenizer; rebuild it")
    w = np.load(p / f"token_weights_{score}.npy").astype(np.float64)
    if vocab_size is not None and len(w) < vocab_size:
        raise ConfigError(f"weight table {path} covers {len(w)} ids, the tokenizer has {vocab_size}")
    return w
