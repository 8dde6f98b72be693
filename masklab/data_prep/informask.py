"""InforMask's informative relevance and token-specific masking rates (Sadeq, Xu & McAuley,
EMNLP 2022, "InforMask: Unsupervised Informative Masking for Language Model Pretraining").

Context = one document of the shards (the paper's sentence / passage). With D documents, df(x)
the documents containing token x and df(x, y) those containing both:
    PMI(x, y) = log( df(x, y) * D / (df(x) * df(y)) )
    relevance of the token at position i of document d:  IR_i = sum_{j in d, j != i} PMI(t_i, t_j)
(co-occurrence is counted once per document; every pair inside a document is observed, so no
smoothing is needed). The paper masks, per passage, the best of N random candidate masks by
informative score sum_{i masked} IR_i; for efficiency it then replaces that search by
token-specific rates measured in one pass over the corpus: rate(x) = (times x was masked by the
chosen candidates) / (occurrences of x). `token_rates` is that pass (N = 10 candidates of one
per-document budget drawn once, counter-based randomness), so training needs only a per-id lookup.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from masklab.data_prep.shards import ShardSet
from masklab.data_prep.splitmix64 import GAMMA, mix, u64

N_CANDIDATES = 10
_DENSE_CELLS = 1 << 24  # documents per chunk x vocab of the dense relevance block (128 MB of float64)


def corpus_arrays(shards: ShardSet) -> tuple[np.ndarray, np.ndarray]:
    """All train tokens int64 [N] and the document of each int64 [N] (documents numbered globally)."""
    toks, docs, base = [], [], 0
    for sh in shards.shards:
        offs = np.asarray(sh.doc_offsets, dtype=np.int64)
        toks.append(np.asarray(sh.tokens, dtype=np.int64))
        docs.append(base + np.repeat(np.arange(len(offs) - 1), np.diff(offs)))
        base += len(offs) - 1
    return np.concatenate(toks), np.concatenate(docs)


def pmi_matrix(tokens: np.ndarray, docs: np.ndarray, vocab_size: int) -> sp.csr_matrix:
    """float64 [V, V] sparse, symmetric: PMI(x, y) of the token pairs that share a document."""
    D = int(docs.max()) + 1 if len(docs) else 0
    X = sp.csr_matrix((np.ones(len(tokens)), (docs, tokens)), shape=(D, vocab_size))
    X.data[:] = 1.0  # duplicates summed on construction: presence only
    df = np.asarray(X.sum(0)).ravel()
    C = (X.T @ X).tocoo()
    val = np.log(C.data * D / (df[C.row] * df[C.col]))
    return sp.csr_matrix((val, (C.row, C.col)), shape=(vocab_size, vocab_size))


def informative_relevance(tokens: np.ndarray, docs: np.ndarray, vocab_size: int) -> np.ndarray:
    """float64 [N]: IR of every position (tokens, docs int64 [N], docs sorted). Per document,
    IR = (token counts of the document) @ PMI, read at each position's token, minus the
    position's pairing with itself."""
    P = pmi_matrix(tokens, docs, vocab_size)
    diag = P.diagonal()
    D = int(docs.max()) + 1 if len(docs) else 0
    N = sp.csr_matrix((np.ones(len(tokens)), (docs, tokens)), shape=(D, vocab_size))  # counts
    out = np.empty(len(tokens))
    step = max(1, _DENSE_CELLS // max(vocab_size, 1))
    bounds = np.searchsorted(docs, np.arange(0, D + step, step))
    for c, d0 in enumerate(range(0, D, step)):
        a, b = bounds[c], bounds[c + 1]
        M = (N[d0:d0 + step] @ P).toarray()  # [docs in chunk, V]
        out[a:b] = M[docs[a:b] - d0, tokens[a:b]] - diag[tokens[a:b]]
    return out


def candidate_uniforms(seed: int, n: int, k: int) -> np.ndarray:
    """float64 [n] in [0, 1): candidate k's draw at global positions 0..n-1 (splitmix64 counter)."""
    with np.errstate(over="ignore"):
        head = mix(np.array([u64(seed) * GAMMA + u64(0x1F0 + k)], dtype=np.uint64))
        x = mix(head + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * GAMMA)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def document_budgets(tokens_ok: np.ndarray, docs: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """float64 [D]: floor(rate * n_d + U_d) for every document d with n_d maskable positions, one
    uniform U_d per document (stream 1 of `candidate_uniforms`), so E[budget] = rate * n_d. It is
    drawn ONCE and shared by all candidates: with a draw per candidate, the best-of-N search by IR
    sum picks the candidate that rounded up, and realised rates drift above `rate` (0.20 instead
    of 0.15 on 10-token documents)."""
    D = int(docs.max()) + 1 if len(docs) else 0
    n = np.bincount(docs, weights=tokens_ok, minlength=D)
    return np.floor(rate * n + candidate_uniforms(seed, D, 1))


def candidate_mask(tokens_ok: np.ndarray, docs: np.ndarray, budget: np.ndarray, seed: int, k: int) -> np.ndarray:
    """bool [N]: candidate k masks budget[d] uniformly random maskable positions of every document d
    (budget float64 [D] from `document_budgets`: fixed across candidates, so the best-of-N search
    cannot favour candidates that merely mask more)."""
    key = np.where(tokens_ok, candidate_uniforms(seed, len(docs), 2 * k), 2.0)  # unmaskable sort last
    order = np.lexsort((key, docs))
    rank = np.empty(len(docs), dtype=np.int64)
    rank[order] = np.arange(len(docs)) - np.searchsorted(docs, docs[order])
    return tokens_ok & (rank < budget[docs])


def token_rates(tokens: np.ndarray, docs: np.ndarray, ir: np.ndarray, maskable: np.ndarray, vocab_size: int,
                rate: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the best of N_CANDIDATES `candidate_mask`s by informative score (sum of IR
    over the masked positions; ties keep the earlier candidate). tokens/docs int64 [N] (docs
    sorted), ir float64 [N], maskable bool [V]. -> (rate float64 [V] = masked / occurrences,
    `rate` where a maskable id never occurs, 0 for unmaskable ids; occurrences int64 [V])."""
    D = int(docs.max()) + 1 if len(docs) else 0
    ok = maskable[tokens]
    best_score = np.full(D, -np.inf)
    best = np.zeros(len(tokens), dtype=bool)
    budget = document_budgets(ok, docs, rate, seed)
    for k in range(N_CANDIDATES):
        m = candidate_mask(ok, docs, budget, seed, k)
        score = np.bincount(docs, weights=np.where(m, ir, 0.0), minlength=D)
        better = score > best_score
        best_score = np.where(better, score, best_score)
        best = np.where(better[docs], m, best)
    occ = np.bincount(tokens[ok], minlength=vocab_size)[:vocab_size]
    masked = np.bincount(tokens[best], minlength=vocab_size)[:vocab_size]
    rates = np.where(occ > 0, masked / np.maximum(occ, 1), rate)
    return np.where(maskable[:vocab_size], rates, 0.0), occ
