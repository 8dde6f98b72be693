"""Units from shards, and the collator that builds `UnpaddedBatch`es on CPU.

A unit (`data.packing`, see packing.py) is a document chunk of at most seq_len - 2 tokens in
[CLS] ... [SEP] (none), a pack of such chunks (docs) or a [CLS] window of the corpus stream
(concat); the unit table lives in the memory-mapped sample index (sample_index.py). Global unit
k of the run is unit perm_e(k mod N) of epoch e = k // N, perm_e a Feistel permutation keyed by
(seed, e) (permutation.py): nothing per epoch is materialised and every process computes the same
order. Which global units a step consumes is decided by steps.py (a sample count or a token
budget); the data position is recorded in checkpoints, so resume is exact and no unit is repeated
or skipped, whatever the number of workers or ranks.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from masklab.data_prep.content import check_batch
from masklab.data_prep.shards import ShardSet
from masklab.pretrain.loop import distributed as D
from masklab.pretrain.batch import UnpaddedBatch
from masklab.pretrain.masking import EVAL_STREAM, MaskedBatch, build_masker, masking_rate
from masklab.pretrain.data.packing import build_layout
from masklab.pretrain.data.permutation import FeistelPermutation
from masklab.pretrain.data.sample_index import open_chunks
from masklab.pretrain.data.steps import StepDataset, step_loader  # noqa: F401  (the loader API lives in steps.py)

# Bumped whenever the same (data, seed, packing) starts to give a different unit order, so that a
# resume across such a change is refused (like MASKING_ALGORITHM).
# 1: np.random.permutation per epoch (until 2026-12-02); 2: Feistel permutation over the sample index.
DATA_ORDER = 2
# What checkpoints written before these keys existed had; and why a mismatch is refused.
DATA_OLD_DEFAULTS = {"data.order": 1, "data.packing": "none", "data.batch_tokens": 0}
DATA_HINTS = {"data.order": "this version of MaskLab orders the samples differently from the one that wrote the "
                            "checkpoint (Feistel permutation over the sample index)",
              "data.content_sha": "the shards differ from the ones the run was trained on (manifest content digest)",
              "data.packing": "the packing mode decides what a sample is", "data.batch_tokens": "the token budget "
              "decides which samples each step takes"}


def data_compat(cfg, shards: ShardSet) -> dict:
    """Resume-compatibility keys of the input pipeline (checked with the others in train.py)."""
    return {"data.order": DATA_ORDER, "data.content_sha": shards.content_digest, "data.packing": cfg.data.packing,
            "data.batch_tokens": cfg.data.batch_tokens}


def build_samples(shards: ShardSet, seq_len: int) -> np.recarray:
    """The document chunks of `packing=none`: memory-mapped .shard, .length, .start [N] (sample_index.py)."""
    return open_chunks(shards, seq_len)


class Collator:
    """Global unit ids + step -> one `UnpaddedBatch` (masks from (seed, step, sequence id))."""

    def __init__(self, cfg, shards: ShardSet, total_steps: Optional[int] = None):
        self.cfg = cfg
        self.shards = shards
        self.tok = shards.tokenizer
        self.samples = build_layout(shards, cfg.data.seq_len, cfg.data.packing)
        if len(self.samples) == 0:
            raise ValueError(f"{shards.root}/{shards.split} holds no samples")
        self.masker = build_masker(cfg.masking, self.tok, shards.manifest)
        self.seed = int(cfg.train.seed)
        m = cfg.masking
        self.total_steps = total_steps or (m.schedule_steps or cfg.train.max_steps)
        self._perms: dict[int, FeistelPermutation] = {}

    def rate(self, step: int) -> float:
        m = self.cfg.masking
        return masking_rate(step, self.total_steps, m.schedule, m.rate, m.rate_end, m.step_at)

    def _perm(self, epoch: int) -> FeistelPermutation:
        if epoch not in self._perms:
            self._perms = {epoch: FeistelPermutation(len(self.samples), self.seed, epoch)}  # a few key words
        return self._perms[epoch]

    def rows(self, global_ids: np.ndarray) -> np.ndarray:
        """Global unit counters int64 [m] -> rows of the unit table int64 [m]."""
        k = np.asarray(global_ids, dtype=np.int64)
        n = len(self.samples)
        epoch = k // n
        if len(k) == 0 or epoch[0] == epoch[-1]:
            return self._perm(int(epoch[0]) if len(k) else 0)(k % n)
        out = np.empty(len(k), dtype=np.int64)
        for e in np.unique(epoch):
            sel = epoch == e
            out[sel] = self._perm(int(e))(k[sel] % n)
        return out

    def sample_ids(self, first: int, count: int) -> np.ndarray:
        """Global unit counters [first, first+count) -> rows of the unit table."""
        return self.rows(np.arange(first, first + count, dtype=np.int64))

    def unit_lengths(self, first: int, count: int) -> np.ndarray:
        """int64 [count]: tokens (specials included) of global units [first, first+count)."""
        return self.samples.lengths(self.sample_ids(first, count))

    def sample_tokens(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """One unit's tokens int64 [L] and word starts uint8 [L], its sequences concatenated."""
        tokens, bits, _, _ = self.samples.gather(np.array([row]), np.zeros(1, np.int64))
        self._check(tokens, bits)
        return tokens, bits.astype(np.uint8)

    def flat_tokens(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit rows -> (tokens int64 [T], word starts uint8 [T], sequence lengths int64 [S])."""
        tokens, bits, lens, _ = self.samples.gather(np.asarray(rows), np.zeros(len(rows), np.int64))
        self._check(tokens, bits)
        return tokens, bits, lens

    def masks(self, global_ids: np.ndarray, step: int, evaluation: bool = False) -> tuple[MaskedBatch, float, np.ndarray]:
        """The masking of these global units at `step` (no tensors) -> (MaskedBatch, rate, sequence ids [S])."""
        rate = self.cfg.masking.eval_rate if evaluation else self.rate(step)
        rng_step = EVAL_STREAM if evaluation else step
        global_ids = np.asarray(global_ids, dtype=np.int64)
        tokens, bits, lens, seq_ids = self.samples.gather(self.rows(global_ids), global_ids)
        self._check(tokens, bits)
        return self.masker.mask_flat(tokens, bits, lens, seq_ids, self.seed, rng_step, rate), rate, seq_ids

    def _check(self, tokens: np.ndarray, bits: np.ndarray) -> None:
        """Content of what was read (data_prep/content.py): a max / min per batch, so a hostile or
        mixed-up data folder is one line, never an IndexError deep in the model."""
        check_batch(tokens, bits, self.tok.vocab_size, f"{self.shards.root}/{self.shards.split} (a training batch)")

    def __call__(self, global_ids: np.ndarray, step: int, evaluation: bool = False) -> UnpaddedBatch:
        m, rate, seq_ids = self.masks(global_ids, step, evaluation)
        b = make_batch([m.input_ids], [m.positions], [m.labels], [m.is_mask_token], m.lens, m.num_predictions,
                       seq_ids, step, rate, m.num_maskable, late=self.cfg.masking.insertion == "late",
                       position_ids=m.position_ids)
        td_rate = float(self.cfg.model.token_drop.rate)
        if td_rate > 0 and not evaluation:  # Token Dropping's row counts, on the host (model/token_drop.py)
            from masklab.pretrain.model.token_drop import host_drop_counts

            if not hasattr(self, "_special"):
                self._special = np.zeros(max(self.tok.vocab_size, max(self.tok.special_ids) + 1) + 1, dtype=bool)
                self._special[list(self.tok.special_ids)] = True
            n, b.num_kept, b.max_seqlen_kept = host_drop_counts(b.input_ids.numpy(), m.lens, b.mlm_positions.numpy(),
                                                                self._special, td_rate)
            b.drop_counts = torch.from_numpy(n)
        return b


def _cu(lengths) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


def open_collator(cfg, shards: ShardSet, world) -> Collator:
    """Rank 0 builds the sample index if it is missing; the other ranks wait, then map it."""
    first = Collator(cfg, shards) if world.is_main else None
    D.barrier()
    return first or Collator(cfg, shards)


def make_batch(ids, pos, labels, is_mask, seq_lens, n_pred, global_ids, step, rate, n_maskable,
               late: bool = False, position_ids: Optional[np.ndarray] = None) -> UnpaddedBatch:
    """The Emitter: per-sample (or already concatenated, one-element lists) arrays -> UnpaddedBatch.
    ids int64 [L_i]; pos int64 [m_i] indices into the concatenated [T]; labels int64 [m_i];
    is_mask bool [m_i]; seq_lens [B]; n_pred [B]; position_ids int64 [T] if already known."""
    input_ids = np.concatenate(ids) if len(ids) > 1 else np.asarray(ids[0], dtype=np.int64)
    positions = (np.concatenate(pos) if len(pos) > 1 else pos[0]).astype(np.int64, copy=False)
    lens = np.asarray(seq_lens, dtype=np.int64)
    if position_ids is None:
        position_ids = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    b = UnpaddedBatch(
        input_ids=torch.from_numpy(input_ids), position_ids=torch.from_numpy(position_ids),
        cu_seqlens=_cu(lens), max_seqlen=int(lens.max()),
        mlm_positions=torch.from_numpy(positions), mlm_labels=torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        num_predictions=int(len(positions)), mlm_cu_seqlens=_cu(n_pred), max_mlm_seqlen=int(np.max(n_pred)),
        sample_index=torch.as_tensor(np.asarray(global_ids, dtype=np.int64)), step=int(step),
        mask_rate=float(rate), num_maskable=int(n_maskable))
    if late:
        inserted = positions[np.concatenate(is_mask)]  # [MASK] slots; random / kept ones stay visible
        keep = np.ones(len(input_ids), dtype=bool)
        keep[inserted] = False
        cu = np.concatenate([[0], np.cumsum(lens)])
        vis_lens = lens - np.diff(np.searchsorted(inserted, cu))
        b.visible_index = torch.from_numpy(np.flatnonzero(keep).astype(np.int64))
        b.insert_positions = torch.from_numpy(inserted.astype(np.int64))
        b.cu_seqlens_visible = _cu(vis_lens)
        b.max_seqlen_visible = int(vis_lens.max())
    return b


def eval_batches(collator: Collator, batch_size: int, n_batches: int) -> list[UnpaddedBatch]:
    """Fixed held-out batches: the same samples and masks at every evaluation (fixed rate)."""
    n = min(n_batches * batch_size, len(collator.samples))
    out = []
    for first in range(0, n, batch_size):
        ids = np.arange(first, min(first + batch_size, n), dtype=np.int64)
        out.append(collator(ids, step=0, evaluation=True))
    return out
