"""Word-start bits per token, computed once in data prep and stored in the shards.

A token starts a word when the pre-tokenizer's word index changes (works for WordPiece
`##`, Unigram `▁` and byte-BPE `Ġ` alike, since it does not look at the token strings).
For Chinese / Japanese, BERT's pre-tokenizer splits every CJK character; a word segmenter
(jieba) regroups characters into words using the character offsets.
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
    """Per token (no specials): 1 where a new word starts. -> uint8 [n_tokens]"""
    n = len(word_ids)
    out = np.ones(n, dtype=np.uint8)
    prev = None
    for i, w in enumerate(word_ids):
        out[i] = 1 if (w is None or w != prev) else 0
        prev = w
    if cjk_segmenter and n and any(_is_cjk(c) for c in text):
        out = _regroup_cjk(out, offsets, text, cjk_segmenter)
    return out


def _segment_boundaries(text: str, segmenter: str) -> set[int]:
    if segmenter != "jieba":
        raise ValueError(f"unknown CJK word segmenter '{segmenter}' (supported: jieba)")
    import jieba

    starts, pos = set(), 0
    for word in jieba.cut(text, HMM=True):
        starts.add(pos)
        pos += len(word)
    return starts


def _regroup_cjk(bits: np.ndarray, offsets, text: str, segmenter: str) -> np.ndarray:
    starts = _segment_boundaries(text, segmenter)
    out = bits.copy()
    for i, (a, _b) in enumerate(offsets):
        if a < len(text) and _is_cjk(text[a]) and i > 0:
            prev_a = offsets[i - 1][0]
            # a CJK character continues the previous token's word unless the segmenter starts a word here
            if prev_a < len(text) and _is_cjk(text[prev_a]) and a not in starts:
                out[i] = 0
            elif a in starts:
                out[i] = 1
    return out
