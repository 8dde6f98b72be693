"""Deterministic WordPiece training on `tokenizers`' BPE trainer.

`tokenizers`' WordPieceTrainer gives a different vocabulary on every run, even single-threaded:
it numbers the `##` continuation characters in hash-map order, and that numbering breaks ties
between merges of equal count. Its plain BPE trainer numbers characters in sorted order and is
deterministic. So we count the pre-tokenized words ourselves, spell every word in a private
alphabet where "c at a word start" and "c inside a word" are two distinct characters (which is
all the `##` prefix means to the trainer), train BPE on those words, and spell the learned
tokens back (`##` for a token that begins inside a word). Same algorithm, stable ties.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

_BASE = 0xF0000  # Supplementary Private Use Area-A/B: 2 x 65534 code points
_MAX_CHARS = (0x10FFFD - _BASE) // 2
_REPEAT = 4096  # repetitions of a word per training string


def count_words(tok: Tokenizer, texts: Iterable[str]) -> Counter:
    """Normalised, pre-tokenized words of `texts` with their counts (the tokenizer's own rules)."""
    counts: Counter = Counter()
    norm, pre = tok.normalizer, tok.pre_tokenizer
    for t in texts:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t) if norm else t))
    return counts


def train_wordpiece_vocab(counts: Counter, vocab_size: int, min_frequency: int, specials: list[str]) -> dict:
    """-> WordPiece vocab {token: id}: specials first, then the BPE trainer's order."""
    chars = sorted({c for w in counts for c in w})
    if len(chars) > _MAX_CHARS:
        raise ValueError(f"{len(chars)} distinct characters: more than the {_MAX_CHARS} a WordPiece sample may hold")
    start = {ord(c): chr(_BASE + 2 * i) for i, c in enumerate(chars)}
    inside = {ord(c): chr(_BASE + 2 * i + 1) for i, c in enumerate(chars)}
    words = sorted((w[0].translate(start) + w[1:].translate(inside), n) for w, n in counts.items())

    def strings() -> Iterator[str]:
        for w, n in words:
            for k in range(0, n, _REPEAT):
                yield " ".join([w] * min(_REPEAT, n - k))

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  show_progress=False)
    bpe.train_from_iterator(strings(), trainer=trainer)

    def spell(t: str) -> str:
        codes = [ord(c) - _BASE for c in t]
        text = "".join(chars[k // 2] for k in codes)
        return ("##" + text) if codes[0] % 2 else text

    learned = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])
    return {t if t in specials else spell(t): i for t, i in learned}
