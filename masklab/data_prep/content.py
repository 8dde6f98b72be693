"""Content checks of token shards: what sha256 cannot tell (a hostile or mixed-up manifest can be
re-hashed to match any bytes).

- token ids < the tokenizer's vocab size (an id beyond it is an IndexError in the embedding);
- doc_offsets start at 0, never decrease and end at the shard's token count (in bounds);
- word-start bits are 0 or 1, one per real token (the arrays have equal lengths: header check).

`check_shard` reads a whole shard in blocks (bounded memory): `masklab verify` runs it on every
shard. Training runs the cheap parts on what it reads anyway: the end points of every shard's
offsets at open (`ShardSet`), the whole offsets while the sample index is built (it reads them
all), and the token ids / bits of every batch as it is gathered (`check_batch`).
"""
from __future__ import annotations

import numpy as np

from masklab.errors import DataError

BLOCK = 1 << 24  # elements per read: 64 MiB of uint32 at most


def _fail(where: str, what: str) -> None:
    raise DataError(f"{where}: {what}; the data directory is corrupt or was not written by this tokenizer "
                    "(re-run `masklab prep`)")


def check_offset_ends(offsets: np.ndarray, n_tokens: int, where: str) -> None:
    """O(1): offsets[0] == 0 and offsets[-1] == n_tokens."""
    if len(offsets) < 1 or int(offsets[0]) != 0 or int(offsets[-1]) != n_tokens:
        ends = (int(offsets[0]), int(offsets[-1])) if len(offsets) else ()
        _fail(where, f"doc_offsets {ends} do not run from 0 to the {n_tokens} tokens of the shard")


def check_offsets(offsets: np.ndarray, n_tokens: int, where: str) -> None:
    """offsets int64 [n_docs + 1]: 0 ... n_tokens, never decreasing."""
    check_offset_ends(offsets, n_tokens, where)
    for a in range(0, len(offsets) - 1, BLOCK):
        d = np.diff(np.asarray(offsets[a:a + BLOCK + 1], dtype=np.int64))
        if len(d) and d.min() < 0:
            i = a + int(np.argmax(d < 0))
            _fail(where, f"doc_offsets decrease at document {i} ({int(offsets[i])} -> {int(offsets[i + 1])})")


def check_ids(tokens: np.ndarray, vocab_size: int, where: str, base: int = 0) -> None:
    """Every id < vocab_size (ids are unsigned in shards; int64 in batches)."""
    for a in range(0, len(tokens), BLOCK):
        t = np.asarray(tokens[a:a + BLOCK])
        if len(t) and (int(t.max()) >= vocab_size or int(t.min()) < 0):
            bad = (t >= vocab_size) | (t < 0)
            i = int(np.argmax(bad))
            _fail(where, f"token id {int(t[i])} at position {base + a + i} is outside the vocabulary "
                         f"(size {vocab_size}; {int(bad.sum())} such ids in this block)")


def check_bits(bits: np.ndarray, where: str) -> None:
    for a in range(0, len(bits), BLOCK):
        b = np.asarray(bits[a:a + BLOCK])
        if len(b) and int(b.max()) > 1:
            i = int(np.argmax(b > 1))
            _fail(where, f"word-start bit {int(b[i])} at position {a + i} is not 0 or 1")


def check_shard(shard, vocab_size: int, where: str) -> None:
    """All content checks of one shard (tokens, word_starts, doc_offsets: see data_prep/shards.py)."""
    if len(shard.word_starts) != len(shard.tokens):
        _fail(where, f"{len(shard.word_starts)} word-start bits for {len(shard.tokens)} tokens")
    check_offsets(shard.doc_offsets, len(shard.tokens), where)
    check_ids(shard.tokens, vocab_size, where)
    check_bits(shard.word_starts, where)


def check_batch(tokens: np.ndarray, bits: np.ndarray, vocab_size: int, where: str) -> None:
    """What training gathered for one batch (a max and a min: cheap)."""
    check_ids(tokens, vocab_size, where)
    check_bits(bits, where)
