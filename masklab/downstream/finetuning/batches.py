"""Encoded examples and unpadded, length-grouped batches for fine-tuning.

A pair is `[CLS] a [SEP] b [SEP]` with token types 0 ... 0 1 ... 1 (BERT's template; ModernBERT
uses the same tokens and ignores types); a single text is `[CLS] a [SEP]`. Over-long inputs are
cut "longest first" (a token off the longer side until it fits), as transformers' tokenizers do.
A batch concatenates its sequences: input_ids / position_ids / token_type_ids int64 [T],
cu_seqlens int32 [B+1]; no pad token is ever computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch


@dataclass
class Encoded:
    """Tokenised examples: ids[i], types[i] int32 [L_i]; labels [N] (int64 classes or float32 scores)."""

    ids: list
    types: list
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def subset(self, idx) -> "Encoded":
        return Encoded([self.ids[i] for i in idx], [self.types[i] for i in idx], self.labels[np.asarray(idx)])


def special_ids(tok) -> tuple[int, int]:
    """([CLS] id, [SEP] id) of a tokenizers.Tokenizer (BERT and ModernBERT names)."""
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        from masklab.errors import CheckpointError

        raise CheckpointError("the tokenizer has no [CLS]/[SEP] token (needed for sequence classification)")
    return cls_id, sep_id


def _truncate(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest-first: drop a token from the longer side (the second on a tie) until the pair fits."""
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def encode(tok, texts_a: Sequence[str], texts_b: Optional[Sequence[str]], labels, max_length: int) -> Encoded:
    """Tokenise (pairs of) texts with a tokenizers.Tokenizer (no padding, no truncation of its own)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tok.to_str())  # a copy without the padding/truncation a tokenizer.json may carry
    tok.no_padding(), tok.no_truncation()
    cls_id, sep_id = special_ids(tok)
    a = [e.ids for e in tok.encode_batch(list(texts_a), add_special_tokens=False)]
    b = [e.ids for e in tok.encode_batch(list(texts_b), add_special_tokens=False)] if texts_b is not None else None
    ids, types = [], []
    for i, xa in enumerate(a):
        if b is None:
            xa = xa[:max(max_length - 2, 0)]
            seq, tt = [cls_id, *xa, sep_id], [0] * (len(xa) + 2)
        else:
            la, lb = _truncate(len(xa), len(b[i]), max(max_length - 3, 0))
            xb = b[i][:lb]
            seq = [cls_id, *xa[:la], sep_id, *xb, sep_id]
            tt = [0] * (la + 2) + [1] * (lb + 1)
        ids.append(np.asarray(seq, dtype=np.int32)), types.append(np.asarray(tt, dtype=np.int32))
    return Encoded(ids, types, np.asarray(labels))


def length_grouped(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, mega: int = 50) -> list[np.ndarray]:
    """The epoch's batches (index arrays): a random permutation keyed by (seed, epoch) cut into
    mega-batches of `mega` x batch_size, each sorted by length and cut into batches, the batch order
    shuffled again (transformers' LengthGroupedSampler, with a counter-based key: a resumed run
    recomputes exactly the same order)."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x61])
    perm = rng.permutation(len(lengths))
    out = []
    for s in range(0, len(perm), mega * batch_size):
        chunk = perm[s:s + mega * batch_size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def by_tokens(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Evaluation batches: indices sorted by length, cut so each batch holds <= max_tokens real tokens."""
    order = np.argsort(lengths, kind="stable")
    out, cur, n = [], [], 0
    for i in order:
        if cur and n + lengths[i] > max_tokens:
            out.append(np.asarray(cur)), cur.clear()
            n = 0
        cur.append(i)
        n += int(lengths[i])
    if cur:
        out.append(np.asarray(cur))
    return out


def collate(data: Encoded, idx: np.ndarray, device="cpu") -> dict:
    """Examples idx -> packed tensors (input_ids, position_ids, token_type_ids int64 [T], cu_seqlens
    int32 [B+1], max_seqlen int, labels [B])."""
    seqs = [data.ids[i] for i in idx]
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    cu = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    pos = np.concatenate([np.arange(n) for n in lens])
    lab = data.labels[np.asarray(idx)]
    t = lambda x, dt: torch.from_numpy(np.ascontiguousarray(x)).to(dt).to(device)  # noqa: E731
    return {"input_ids": t(np.concatenate(seqs), torch.int64), "position_ids": t(pos, torch.int64),
            "token_type_ids": t(np.concatenate([data.types[i] for i in idx]), torch.int64),
            "cu_seqlens": t(cu, torch.int32), "max_seqlen": int(lens.max()),
            "labels": t(lab, torch.float32 if lab.dtype.kind == "f" else torch.int64)}
