"""Word-start bits per token, computed once in data prep and stored in the shards.

A token starts a word when the pre-tokenizer's word index changes (works for WordPiece
`##`, Unigram `▁` and byte-BPE `Ġ` alike, since it does not look at the token strings).
For Chinese / Japanese the pre-tokenizer is wrong (BERT's splits every CJK character,
Metaspace / byte-level ones keep a whole unspaced sentence as one word); with
`--cjk-segmenter jieba` a word segmenter decides the boundaries there, via character offsets.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0xF900 <= cp <= 0xFAFF or 0x3040 <= cp <= 0x30FF)


def word_starts(word_ids: Sequence[Optional[int]], offsets: Sequence[tuple[int, int]], text: str,
                cjk_segmenter: Optional[str] = None) -> np.ndarray:
    """Per token (no specials): 1 where a new word starts. -> uint8 [n_tokens]
    word_ids: the encoding's pre-tokenizer word index per token (None for added tokens);
    offsets: (start, end) character offsets into `text` per token."""
    n = len(word_ids)
    w = np.fromiter((-1 if x is None else x for x in word_ids), dtype=np.int64, count=n)
    out = np.ones(n, dtype=np.uint8)
    out[1:] = (w[1:] != w[:-1]) | (w[1:] < 0)
    if cjk_segmenter and n and any(_is_cjk(c) for c in text):
        out = _regroup_cjk(out, offsets, text, cjk_segmenter)
    return out


def _segment_boundaries(text: str, segmenter: str) -> np.ndarray:
    """bool [len(text) + 1]: True at the first character of every segmenter word."""
    if segmenter != "jieba":
        raise ValueError(f"unknown CJK word segmenter '{segmenter}' (supported: jieba)")
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    starts, pos = np.zeros(len(text) + 1, dtype=bool), 0
    for word in jieba.cut(text, HMM=True):  # the words concatenate back to `text`
        starts[pos] = True
        pos += len(word)
    starts[len(text)] = True
    return starts


def _regroup_cjk(bits: np.ndarray, offsets, text: str, segmenter: str) -> np.ndarray:
    """Word starts next to CJK text come from the segmenter instead of the pre-tokenizer.

    BERT's pre-tokenizer makes every CJK character a word (too fine); Metaspace (Unigram) and
    byte-level pre-tokenizers make a whole unspaced sentence one word (too coarse). For a token
    that begins with a CJK character or follows a token ending in one, the bit becomes "the
    segmenter starts a word at this token's first non-space character"; a token that begins at
    the same character as the previous one (a piece of a character, byte-BPE) never starts a word.
    Other tokens keep the pre-tokenizer's bit."""
    starts = _segment_boundaries(text, segmenter)
    out = bits.copy()
    prev_first, prev_last_cjk = -1, False
    for i, (a, b) in enumerate(offsets):
        first = a
        while first < b - 1 and text[first].isspace():  # Metaspace / byte-level tokens carry the space
            first += 1
        here_cjk = first < len(text) and _is_cjk(text[first])
        if i > 0 and (here_cjk or prev_last_cjk):
            out[i] = 0 if first == prev_first else int(starts[min(first, len(text))])
        prev_first = first
        prev_last_cjk = b > 0 and b - 1 < len(text) and _is_cjk(text[b - 1])
    return out
