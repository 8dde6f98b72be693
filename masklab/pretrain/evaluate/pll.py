"""Pseudo-log-likelihood (Salazar et al. 2020, "Masked Language Model Scoring").

PLL(s) = sum_t log P(x_t | s with x_t replaced by [MASK]), over the non-special tokens t.
The masked copies of a sentence are packed into one unpadded batch (copy c has [MASK] at its
target t_c; cu_seqlens = [0, L, 2L, ...]) and only row c*L + t_c of each copy goes through the
MLM head, so a sentence costs one encoder pass over n*L tokens and n head rows, not n padded
forwards with full [L, V] logits. Copies are chunked by a token budget to bound memory.
Pseudo-perplexity = exp(-sum PLL / number of scored tokens).
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Optional

import torch

log = logging.getLogger("masklab.pll")


@torch.no_grad()
def pll_tokens(model, ids: torch.Tensor, special: Iterable[int], mask_id: int, max_copies: int = 256,
               max_tokens: int = 32768) -> torch.Tensor:
    """ids int64 [L] (a whole sentence, [CLS]/[SEP] included) -> float64 [n]: log P(x_t | rest)
    for each non-special position t, in order. At most min(max_copies, max_tokens // L) copies
    run per forward; the result does not depend on the chunking (up to float rounding)."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    special = {int(s) for s in special}
    L = int(ids.shape[0])
    targets = torch.tensor([i for i in range(L) if int(ids[i]) not in special], dtype=torch.long, device=device)
    if targets.numel() == 0:  # only specials: nothing to score (split() would yield one empty chunk)
        return torch.zeros(0, dtype=torch.float64)
    per_chunk = max(1, min(max_copies, max_tokens // max(L, 1)))
    out = []
    for chunk in targets.split(per_chunk):
        n = int(chunk.shape[0])
        x = ids.repeat(n, 1)  # [n, L]: copy c masks position chunk[c]
        x[torch.arange(n, device=device), chunk] = mask_id
        cu = torch.arange(0, (n + 1) * L, L, dtype=torch.int32, device=device)
        h = model.encode(x.flatten(), cu, L, torch.arange(L, device=device).repeat(n))  # [n*L, D]
        rows = torch.arange(n, device=device) * L + chunk  # the masked slot of each copy
        logp = torch.log_softmax(model.mlm_logits(h.index_select(0, rows)).double(), -1)  # [n, V]
        out.append(logp.gather(1, ids[chunk][:, None]).squeeze(1))
    return torch.cat(out).cpu()


def pll_report_ids(model, sentences: Iterable[torch.Tensor], special: Iterable[int], mask_id: int) -> dict:
    """Token-id sentences (int64 [L_i], specials included) -> {pll_per_token, pseudo_perplexity,
    pll_per_sentence, tokens, sentences, skipped_sentences}; sentences with nothing to score
    (only special tokens) are skipped and counted."""
    was = model.training
    model.eval()
    total, n, count, skipped = 0.0, 0, 0, 0
    try:
        for ids in sentences:
            lp = pll_tokens(model, ids, special, mask_id)
            if len(lp):
                total, n, count = total + float(lp.sum()), n + len(lp), count + 1
            else:
                skipped += 1
    finally:
        model.train(was)
    if skipped:
        log.warning("PLL: skipped %d sentence(s) with nothing to score (only special tokens)", skipped)
    per = total / max(n, 1)
    return {"pll_per_token": per, "pseudo_perplexity": math.exp(-per) if n else float("nan"),
            "pll_per_sentence": total / max(count, 1), "tokens": n, "sentences": count,
            "skipped_sentences": skipped}


def pll_report(model, tokenizer, texts: list[str], special: Iterable[int], mask_id: int,
               max_len: Optional[int] = None) -> dict:
    """tokenizers.Tokenizer + raw texts -> pll_report_ids(...). A text longer than max_len
    (default: the model's max positions) keeps its head and its final [SEP]."""
    max_len = max_len or model.cfg.max_position_embeddings

    def encode(t: str) -> torch.Tensor:
        ids = tokenizer.encode(t).ids
        return torch.tensor(ids if len(ids) <= max_len else ids[:max_len - 1] + ids[-1:], dtype=torch.long)

    return pll_report_ids(model, (encode(t) for t in texts), special, mask_id)
