"""Token Dropping (Hou et al., ACL 2022, "Token Dropping for Efficient BERT Pretraining").

Layers [start_layer, end_layer) of the encoder run on a subset of each sequence's tokens: the
`rate` fraction (floor, per sequence) with the lowest importance is dropped at start_layer and
merged back, unchanged, after end_layer - 1, so the later layers (at least the last) see every
token again. Importance of a token = running MLM loss of its id: an exponential moving average
over optimizer steps, `ema <- decay * ema + (1 - decay) * mean loss of the id in the step` (ids
not predicted in a step keep their value; all start at log V, the loss of a uniform guess).
Predicted positions and special tokens are never dropped. Ties break by a fixed hash of
(position, id), so the plan is a pure function of the batch and the state.

The unpadded layout makes this a row gather: the kept rows [T_keep, D] (sorted, so still grouped
by sequence) get their own cu_seqlens; `kernels.gather_rows` / `scatter_rows` move rows out and
back. Only training forwards drop: evaluation and the HF export run every token (the state is a
set of buffers that the HF mapping ignores).

State (buffers, saved in model.safetensors, so a resume restores it exactly): `ema` fp32 [V];
`pending_sum` / `pending_count` fp32 [V], the losses of the optimizer step in progress (every
micro-batch adds to them; under DDP they are all-reduced, so every rank holds the same);
`pending_step` int64 [1]. The first forward of a later step folds the pending step into `ema`:
the importance used in step s is the same whatever the micro-batch split or world size.

Sync-free: how many rows each sequence drops depends on lengths and protected tokens only, not on the
importance, so the collator counts them on the host (`drop_counts`, carried by the batch with the
kept total and the longest kept sequence); the device picks *which* rows with static shapes (a stable
sort instead of `nonzero`, `repeat_interleave` with a known output size, the fold of the pending step
as a `where`), so a training step never waits for the device. A batch without the counts (built
by hand) gets them from the device, which syncs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from masklab import kernels


@dataclass
class DropPlan:
    keep: torch.Tensor  # int64 [T_keep] sorted indices into [T] of the rows the middle layers see
    cu_seqlens: torch.Tensor  # int32 [B+1] of the kept rows
    max_seqlen: int  # the longest kept sequence
    dropped: torch.Tensor  # bool [T]


def drop_counts(seq_lens: np.ndarray, n_protected: np.ndarray, rate: float) -> np.ndarray:
    """Rows each sequence drops: floor(len * rate) (float64), at most its unprotected rows. int64 [B]."""
    lens = np.asarray(seq_lens, dtype=np.int64)
    return np.minimum(np.floor(lens * float(rate)).astype(np.int64), lens - np.asarray(n_protected, np.int64))


def host_drop_counts(input_ids: np.ndarray, seq_lens: np.ndarray, mlm_positions: np.ndarray, special: np.ndarray,
                     rate: float) -> tuple[np.ndarray, int, int]:
    """The collator's side: (drop counts int64 [B], kept rows, longest kept sequence). special: bool [>= V]
    (the tokenizer's special ids); predicted positions are protected too."""
    lens = np.asarray(seq_lens, dtype=np.int64)
    protected = special[np.asarray(input_ids)].copy()
    protected[np.asarray(mlm_positions)] = True
    per_seq = np.bincount(np.repeat(np.arange(len(lens)), lens)[protected], minlength=len(lens))
    n = drop_counts(lens, per_seq, rate)
    kept = lens - n
    return n, int(kept.sum()), int(kept.max()) if len(kept) else 0


class TokenDrop(nn.Module):
    """Built by `attach_token_drop` when model.token_drop.rate > 0."""

    def __init__(self, rate: float, start: int, end: int, decay: float, vocab_size: int, special_ids):
        super().__init__()
        self.rate, self.start, self.end, self.decay = float(rate), int(start), int(end), float(decay)
        self.register_buffer("ema", torch.full((vocab_size,), math.log(vocab_size)))
        self.register_buffer("pending_sum", torch.zeros(vocab_size))
        self.register_buffer("pending_count", torch.zeros(vocab_size))
        self.register_buffer("pending_step", torch.full((1,), -1, dtype=torch.long))
        never = torch.zeros(vocab_size, dtype=torch.bool)
        never[[i for i in special_ids if i < vocab_size]] = True
        self.register_buffer("never_drop", never, persistent=False)
        self._plan: Optional[DropPlan] = None
        self._full: Optional[torch.Tensor] = None

    def covers(self, i: int) -> bool:
        """Layer i runs on the kept subset (training forwards only)."""
        return self.training and self.start <= i < self.end

    @torch.no_grad()
    def plan(self, b) -> DropPlan:
        """Which rows of batch b the middle layers keep (static shapes: no device sync, see the docstring)."""
        self._fold(b.step)
        ids, T = b.input_ids, b.num_tokens
        seq_len = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).long()
        seq = torch.repeat_interleave(torch.arange(len(seq_len), device=ids.device), seq_len, output_size=T)
        protected = self.never_drop[ids].clone()
        protected[b.mlm_positions] = True
        tie = ((b.position_ids * 2654435761 + ids * 40503) % 65536).float() * (1e-6 / 65536)
        score = torch.where(protected, torch.full_like(self.ema[ids], math.inf), self.ema[ids] + tie)
        order = torch.sort(score, stable=True).indices
        order = order[torch.sort(seq[order], stable=True).indices]  # by sequence, lowest importance first
        rank = torch.empty(T, dtype=torch.long, device=ids.device)
        rank[order] = torch.arange(T, device=ids.device) - b.cu_seqlens.long()[seq[order]]
        if getattr(b, "drop_counts", None) is not None:
            n_drop, n_keep, max_len = b.drop_counts, b.num_kept, b.max_seqlen_kept
        else:  # a batch built without the collator: count here (reads the device)
            droppable = torch.zeros(len(seq_len), dtype=torch.long, device=ids.device).index_add_(
                0, seq, (~protected).long())
            n_drop = torch.minimum(torch.floor(seq_len.double() * self.rate).long(), droppable)
            kept_len = seq_len - n_drop
            n_keep, max_len = int(kept_len.sum()), int(kept_len.max()) if len(kept_len) else 0
        dropped = rank < n_drop[seq]
        # the kept rows in index order: a stable sort puts the 0s (kept) first; [:n_keep] has a host size
        keep = torch.sort(dropped.to(torch.uint8), stable=True).indices[:n_keep]
        cu = F.pad(torch.cumsum(seq_len - n_drop, 0), (1, 0)).to(torch.int32)
        return DropPlan(keep, cu, max_len, dropped)

    def layer(self, i: int, h: torch.Tensor, b, run: Callable) -> torch.Tensor:
        """Layer i of the dropped range. h: [T, D] at start_layer, else [T_keep, D]. run(h, cu_seqlens,
        max_seqlen, keep) calls the layer (keep: int64 [T_keep], for per-token side inputs such as
        rotary tables). -> [T_keep, D], or [T, D] after the last dropped layer (dropped rows as they
        entered the range)."""
        if i == self.start:
            self._plan, self._full = self.plan(b), h
            h = kernels.gather_rows(h, self._plan.keep)
        p = self._plan
        h = run(h, p.cu_seqlens, p.max_seqlen, p.keep)
        if i == self.end - 1:
            full, self._plan, self._full = self._full, None, None
            h = full * p.dropped.unsqueeze(1).to(full.dtype) + kernels.scatter_rows(h, p.keep, full.shape[0])
        return h

    @torch.no_grad()
    def observe(self, logits_fn: Callable, h_pred: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """Add this micro-batch's per-prediction MLM losses to the pending step. h_pred: [M, D] final
        hidden states of the predictions; labels int64 [M]; logits_fn: [M, D] -> [M, V]."""
        if not self.training:
            return
        self._fold(step)
        ok = labels != -100  # no boolean indexing (it syncs): ignored rows add 0 at id 0
        loss = F.cross_entropy(logits_fn(h_pred).float(), labels, reduction="none", ignore_index=-100)
        lab = torch.where(ok, labels, torch.zeros_like(labels))
        s = torch.zeros_like(self.pending_sum).index_add_(0, lab, loss * ok)
        c = torch.zeros_like(self.pending_count).index_add_(0, lab, ok.to(loss.dtype))
        if dist.is_available() and dist.is_initialized():  # every rank holds the whole step's losses
            both = torch.stack([s, c])
            dist.all_reduce(both)
            s, c = both[0], both[1]
        self.pending_sum += s
        self.pending_count += c

    def _fold(self, step: int) -> None:
        """Fold the pending losses of an earlier step into `ema` (once, at that step's end). Branch-free on
        the device: reading pending_step to decide would sync every forward."""
        fold = self.pending_step != step  # bool [1]
        seen = (self.pending_count > 0) & fold
        mean = self.pending_sum / self.pending_count.clamp(min=1)
        self.ema.copy_(torch.where(seen, self.decay * self.ema + (1 - self.decay) * mean, self.ema))
        self.pending_sum.mul_(~fold), self.pending_count.mul_(~fold)
        self.pending_step.fill_(step)


def attach_token_drop(model: nn.Module, td_cfg, num_layers: int, vocab_size: int, special_ids) -> None:
    """model.token_drop = a TokenDrop (rate > 0) or None. end_layer < 0 counts from the end."""
    end = td_cfg.end_layer if td_cfg.end_layer >= 0 else num_layers + td_cfg.end_layer
    model.token_drop = (TokenDrop(td_cfg.rate, td_cfg.start_layer, end, td_cfg.ema_decay, vocab_size, special_ids)
                        if td_cfg.rate > 0 else None)
