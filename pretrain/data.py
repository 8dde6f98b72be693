"""Samples from shards, and the collator that builds `UnpaddedBatch`es on CPU.

A sample is a chunk of one document of at most seq_len - 2 tokens, wrapped in [CLS] ... [SEP]
(no cross-document packing inside a sample: documents keep their real lengths, which is
what unpadding exploits). Global sample k of the run is sample perm_e[k mod N] of epoch
e = k // N, perm_e drawn from (seed, e). Step s consumes global samples
[s*B, (s+1)*B): the data position is a pure function of the step, so resume is exact and
no sample is repeated or skipped, whatever the number of workers or ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from masklab.data_prep.shards import ShardSet
from masklab.pretrain.batch import UnpaddedBatch
from masklab.pretrain.masking import EVAL_STREAM, MaskedBatch, build_masker, masking_rate


@dataclass
class SampleTable:
    shard: np.ndarray  # int32 [N]
    start: np.ndarray  # int64 [N] token offset within the shard
    length: np.ndarray  # int32 [N] tokens, specials excluded

    def __len__(self) -> int:
        return int(self.shard.shape[0])


def build_samples(shards: ShardSet, seq_len: int) -> SampleTable:
    body = seq_len - 2
    sh, st, ln = [], [], []
    for i, s in enumerate(shards.shards):
        offs = np.asarray(s.doc_offsets, dtype=np.int64)
        lens = np.diff(offs)
        n_chunks = (lens + body - 1) // body
        doc = np.repeat(np.arange(len(lens)), n_chunks)
        first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        k = np.arange(len(doc)) - first  # chunk number within its document
        start = offs[doc] + k * body
        length = np.minimum(body, offs[doc + 1] - start)
        sh.append(np.full(len(doc), i, np.int32)), st.append(start), ln.append(length.astype(np.int32))
    return SampleTable(np.concatenate(sh), np.concatenate(st), np.concatenate(ln))


class Collator:
    """Global sample ids + step -> one `UnpaddedBatch` (masks from (seed, step, sample id))."""

    def __init__(self, cfg, shards: ShardSet, total_steps: Optional[int] = None):
        self.cfg = cfg
        self.shards = shards
        self.tok = shards.tokenizer
        self.samples = build_samples(shards, cfg.data.seq_len)
        if len(self.samples) == 0:
            raise ValueError(f"{shards.root}/{shards.split} holds no samples")
        self.masker = build_masker(cfg.masking, self.tok, shards.manifest)
        self.seed = int(cfg.train.seed)
        m = cfg.masking
        self.total_steps = total_steps or (m.schedule_steps or cfg.train.max_steps)
        self._perm_cache: dict[int, np.ndarray] = {}

    def rate(self, step: int) -> float:
        m = self.cfg.masking
        return masking_rate(step, self.total_steps, m.schedule, m.rate, m.rate_end, m.step_at)

    def sample_ids(self, first: int, count: int) -> np.ndarray:
        """Global sample counters [first, first+count) -> rows of the sample table."""
        n = len(self.samples)
        k = np.arange(first, first + count, dtype=np.int64)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(k // n):
            perm = self._perm_cache.get(int(e))
            if perm is None:
                perm = np.random.default_rng([self.seed, int(e)]).permutation(n)
                self._perm_cache = {int(e): perm}  # keep one epoch: bounded memory
            sel = (k // n) == e
            out[sel] = perm[k[sel] % n]
        return out

    def sample_tokens(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.shards.shards[self.samples.shard[row]]
        a, n = int(self.samples.start[row]), int(self.samples.length[row])
        body = np.asarray(s.tokens[a:a + n], dtype=np.int64)
        ws = np.asarray(s.word_starts[a:a + n], dtype=np.uint8)
        tokens = np.concatenate([[self.tok.cls_id], body, [self.tok.sep_id]])
        return tokens, np.concatenate([[1], ws, [1]]).astype(np.uint8)

    def flat_tokens(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample rows -> (tokens int64 [T], word starts uint8 [T], lengths int64 [B]): samples
        wrapped in [CLS] ... [SEP] and concatenated with one np.concatenate (no per-token work)."""
        cls, sep, one = np.array([self.tok.cls_id]), np.array([self.tok.sep_id]), np.ones(1, np.uint8)
        toks, bits = [], []
        lens = self.samples.length[rows].astype(np.int64) + 2
        for r in rows:
            s = self.shards.shards[self.samples.shard[r]]
            a = int(self.samples.start[r])
            b = a + int(self.samples.length[r])
            toks += [cls, s.tokens[a:b], sep]
            bits += [one, s.word_starts[a:b], one]
        return np.concatenate(toks).astype(np.int64, copy=False), np.concatenate(bits), lens

    def masks(self, global_ids: np.ndarray, step: int, evaluation: bool = False) -> tuple[MaskedBatch, float]:
        """The masking of these global samples at `step` (no tensors) -> (MaskedBatch, rate)."""
        rate = self.cfg.masking.eval_rate if evaluation else self.rate(step)
        rng_step = EVAL_STREAM if evaluation else step
        global_ids = np.asarray(global_ids, dtype=np.int64)
        rows = self.sample_ids(int(global_ids[0]), len(global_ids)) if _contiguous(global_ids) else \
            np.array([self.sample_ids(int(g), 1)[0] for g in global_ids])
        tokens, bits, lens = self.flat_tokens(rows)
        return self.masker.mask_flat(tokens, bits, lens, global_ids, self.seed, rng_step, rate), rate

    def __call__(self, global_ids: np.ndarray, step: int, evaluation: bool = False) -> UnpaddedBatch:
        m, rate = self.masks(global_ids, step, evaluation)
        return make_batch([m.input_ids], [m.positions], [m.labels], [m.is_mask_token], m.lens, m.num_predictions,
                          global_ids, step, rate, m.num_maskable, late=self.cfg.masking.insertion == "late",
                          position_ids=m.position_ids)


def _contiguous(g: np.ndarray) -> bool:
    return len(g) > 0 and bool(np.all(np.diff(g) == 1))


def _cu(lengths) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))


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


class StepDataset(torch.utils.data.Dataset):
    """Item `step` -> this rank's micro-batches for that optimizer step (a list)."""

    def __init__(self, collator: Collator, batch_size: int, micro_batch_size: int, rank: int = 0, world: int = 1):
        if batch_size % (micro_batch_size * world):
            raise ValueError(f"data.batch_size={batch_size} is not divisible by micro_batch_size={micro_batch_size} "
                             f"x world_size={world}")
        self.c, self.B, self.mb, self.rank, self.world = collator, batch_size, micro_batch_size, rank, world
        self.accum = batch_size // (micro_batch_size * world)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> list[UnpaddedBatch]:
        out = []
        for a in range(self.accum):
            first = step * self.B + (a * self.world + self.rank) * self.mb
            out.append(self.c(np.arange(first, first + self.mb, dtype=np.int64), step))
        return out


class StepSampler(torch.utils.data.Sampler):
    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _identity(x):
    return x


def step_loader(dataset: StepDataset, start: int, stop: int, num_workers: int = 0, pin: bool = False):
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=StepSampler(start, stop),
                                       num_workers=num_workers, collate_fn=_identity, pin_memory=pin,
                                       persistent_workers=False, prefetch_factor=4 if num_workers else None)


def eval_batches(collator: Collator, batch_size: int, n_batches: int) -> list[UnpaddedBatch]:
    """Fixed held-out batches: the same samples and masks at every evaluation (fixed rate)."""
    n = min(n_batches * batch_size, len(collator.samples))
    out = []
    for first in range(0, n, batch_size):
        ids = np.arange(first, min(first + batch_size, n), dtype=np.int64)
        out.append(collator(ids, step=0, evaluation=True))
    return out
