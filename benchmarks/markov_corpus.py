"""A documented corpus generator for scale benchmarks: a word-bigram Markov chain trained on
real prepared shards (pydoc), so a generated corpus has real words and local word order and its
distinct n-grams keep growing with its size (repeating the text would not).

Words are the shards' word-start-delimited token runs. A document draws its length (in words)
from the training documents, its first word from their first words, and each next word
uniformly among the recorded successors of the current one (a word seen only at document ends
restarts from a first word). Counter-based: the same (seed, size) gives the same corpus.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from masklab.data_prep import ShardSet
from masklab.data_prep.ngram_hash import token_hash_table, word_hashes
from masklab.data_prep.shard_writer import ShardWriter


class WordBigram:
    def __init__(self, shards: ShardSet):
        toks = np.concatenate([np.asarray(s.tokens, np.int64) for s in shards.shards])
        ws = np.concatenate([np.asarray(s.word_starts).astype(bool) for s in shards.shards])
        offs, base = [], 0
        for s in shards.shards:
            offs.append(np.asarray(s.doc_offsets[:-1], np.int64) + base)
            base += int(s.doc_offsets[-1])
        doc_start = np.concatenate(offs)
        ws[doc_start] = True
        first = np.flatnonzero(ws)
        length = np.diff(np.append(first, len(toks)))
        h = word_hashes(toks, np.ones(len(toks), bool), first, length, token_hash_table(shards.tokenizer.vocab_size))
        _, idx, wid = np.unique(h, return_index=True, return_inverse=True)
        self.word_tokens = [toks[first[i]:first[i] + length[i]] for i in idx]  # tokens of each word id
        self.word_len = length[idx]
        doc_of_word = np.searchsorted(doc_start, first, side="right") - 1
        starts = np.searchsorted(doc_of_word, np.arange(len(doc_start)))
        self.first_words = wid[starts]
        self.doc_words = np.diff(np.append(starts, len(wid)))
        same = doc_of_word[:-1] == doc_of_word[1:]
        prev, nxt = wid[:-1][same], wid[1:][same]
        order = np.argsort(prev, kind="stable")
        self.succ = nxt[order]
        self.succ_start = np.searchsorted(prev[order], np.arange(len(idx)))
        self.succ_count = np.bincount(prev, minlength=len(idx))

    def generate(self, n_tokens: int, seed: int):
        """-> list of (tokens int64 [L], word_starts uint8 [L]) documents, >= n_tokens in all."""
        rng = np.random.Generator(np.random.Philox(key=seed))
        docs, total = [], 0
        while total < n_tokens:
            B = 4096
            lens = rng.choice(self.doc_words, B)
            cur = rng.choice(self.first_words, B)
            seq = [cur]
            for _ in range(int(lens.max()) - 1):
                c = self.succ_count[cur]
                pick = self.succ[np.minimum(self.succ_start[cur] + (rng.random(B) * c).astype(np.int64),
                                            len(self.succ) - 1)]
                cur = np.where(c > 0, pick, rng.choice(self.first_words, B))
                seq.append(cur)
            words = np.stack(seq, 1)
            for b in range(B):
                w = words[b, :lens[b]]
                t = np.concatenate([self.word_tokens[i] for i in w])
                s = np.zeros(len(t), np.uint8)
                s[np.cumsum(self.word_len[w]) - self.word_len[w]] = 1
                docs.append((t, s))
                total += len(t)
                if total >= n_tokens:
                    break
        return docs


def write_corpus(src: str, out: str, n_tokens: int, seed: int = 0, model: WordBigram | None = None) -> Path:
    """A prepared-data directory (train split only) of ~n_tokens generated tokens, tokenizer of `src`."""
    shards = ShardSet(src, "train")
    model = model or WordBigram(shards)
    docs = model.generate(n_tokens, seed)
    o = Path(out)
    shutil.rmtree(o, ignore_errors=True)
    (o / "train").mkdir(parents=True)
    shutil.copytree(Path(src) / "tokenizer", o / "tokenizer")
    writer = ShardWriter(o / "train", "shard", shards.tokenizer.vocab_size, shard_tokens=1 << 22)
    for i in range(0, len(docs), 1024):
        part = docs[i:i + 1024]
        writer.add(np.concatenate([t for t, _ in part]).astype(np.uint32), np.concatenate([s for _, s in part]),
                   np.asarray([len(t) for t, _ in part], np.int64))
    entries = writer.close()
    m = dict(shards.manifest)
    m.update(source=f"markov-bigram({src}, seed={seed})", splits={"train": entries},
             counts={"train": {"documents": len(docs), "tokens": sum(len(t) for t, _ in docs)}})
    (o / "manifest.json").write_text(json.dumps(m, indent=1))
    return o
