"""Pseudo-log-likelihood (Salazar et al., "Masked Language Model Scoring").

PLL(s) = sum_t log P(x_t | s with x_t masked). The L masked copies of a sentence are packed
into one unpadded batch (copy t has [MASK] at t) and only the masked position of each copy
goes through the MLM head, so one forward scores the whole sentence.
"""
from __future__ import annotations

import math

import torch

from pretrain.batch import UnpaddedBatch  # noqa: F401  (the contract the copies follow)


@torch.no_grad()
def pll_tokens(model, ids: torch.Tensor, special: set[int], mask_id: int, max_copies: int = 256) -> torch.Tensor:
    """ids int64 [L] (with [CLS]/[SEP]) -> log P of every non-special token [n] (float64)."""
    targets = [i for i in range(len(ids)) if int(ids[i]) not in special]
    out = []
    for c0 in range(0, len(targets), max_copies):
        chunk = targets[c0:c0 + max_copies]
        L, n = len(ids), len(chunk)
        x = ids.repeat(n, 1)
        x[torch.arange(n), torch.tensor(chunk)] = mask_id
        cu = torch.arange(0, (n + 1) * L, L, dtype=torch.int32)
        pos = torch.arange(L).repeat(n)
        h = model.encode(x.flatten(), cu, L, pos)
        rows = torch.arange(n) * L + torch.tensor(chunk)
        logp = torch.log_softmax(model.mlm_logits(h[rows]).double(), -1)
        out.append(logp[torch.arange(n), ids[chunk]])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def pll_report(model, tokenizer, texts: list[str], special: set[int], mask_id: int) -> dict:
    """-> {pll_per_token, pseudo_perplexity, tokens, sentences}."""
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for t in texts:
            ids = torch.tensor(tokenizer.encode(t).ids[:model.cfg.max_position_embeddings], dtype=torch.long)
            lp = pll_tokens(model, ids, special, mask_id)
            total += float(lp.sum())
            n += len(lp)
    finally:
        model.train(was)
    per = total / max(n, 1)
    return {"pll_per_token": per, "pseudo_perplexity": math.exp(-per), "tokens": n, "sentences": len(texts)}
