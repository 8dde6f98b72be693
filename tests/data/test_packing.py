"""data.packing none / docs / concat and token budgets: coverage, boundaries, resume, splits."""
from collections import Counter

import numpy as np
import pytest
import torch

from masklab.config import load_config
from masklab.data_prep import ShardSet
from masklab.errors import ConfigError
from masklab.pretrain.data.collator import Collator
from masklab.pretrain.data.steps import StepDataset, make_budget, step_loader

L = 64
MODES = ["none", "docs", "concat"]


def _collator(data, *ov):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={data}", f"data.seq_len={L}", *ov])
    return Collator(cfg, ShardSet(data, "train")), cfg


def _body(tokens, special):
    return Counter(int(t) for t in tokens if int(t) not in special)


@pytest.mark.parametrize("mode", MODES)
def test_an_epoch_holds_every_token_once(prepared_data, mode):
    c, _ = _collator(prepared_data, f"data.packing={mode}")
    n = len(c.samples)
    rows = c.sample_ids(0, n)
    assert np.array_equal(np.sort(rows), np.arange(n))
    tokens, _, lens = c.flat_tokens(rows)
    corpus = np.concatenate([np.asarray(s.tokens) for s in c.shards.shards])
    special = set(c.tok.special_ids)
    assert _body(tokens, special) == _body(corpus, special)
    assert int(lens.sum()) == len(tokens)
    if mode == "docs":  # every chunk of the corpus sits in exactly one pack
        chunk_rows, _ = c.samples.members(np.arange(n))
        assert np.array_equal(np.sort(chunk_rows), np.arange(len(c.samples.chunks)))
    if mode == "concat":  # windows in order are the corpus stream: documents joined by [SEP]
        windows, _, wl = c.flat_tokens(np.arange(n))
        keep = np.ones(len(windows), bool)
        keep[np.cumsum(wl) - wl] = False  # drop each window's [CLS]
        docs = [np.append(np.asarray(s.tokens[a:b]), c.tok.sep_id) for s in c.shards.shards
                for a, b in zip(s.doc_offsets[:-1], s.doc_offsets[1:])]
        assert np.array_equal(windows[keep], np.concatenate(docs))


@pytest.mark.parametrize("mode", MODES)
def test_sequence_boundaries(prepared_data, mode):
    c, _ = _collator(prepared_data, f"data.packing={mode}")
    b = c(np.arange(8), step=2)
    lens = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).long()
    starts = b.cu_seqlens[:-1].long()
    assert torch.all(b.input_ids[starts] == c.tok.cls_id) and int(lens.max()) <= L
    assert torch.equal(b.position_ids, torch.cat([torch.arange(int(n)) for n in lens]))  # restart per sequence
    assert b.sample_index.numel() == b.batch_size and b.sample_index.unique().numel() == b.batch_size
    units = c.samples.lengths(c.sample_ids(0, 8))
    assert int(units.max()) <= L and int(units.sum()) == b.num_tokens
    if mode == "docs":  # a pack holds several documents, each its own attention segment ending in [SEP]
        assert b.batch_size > 8
        assert torch.all(b.input_ids[b.cu_seqlens[1:].long() - 1] == c.tok.sep_id)
    if mode == "concat":  # one full-length sequence per unit, attention across documents ([SEP] inside)
        assert b.batch_size == 8 and torch.all(lens == L)
        inner = torch.ones(b.num_tokens, dtype=torch.bool)
        inner[b.cu_seqlens[1:].long() - 1] = False
        assert bool((b.input_ids[inner] == c.tok.sep_id).any())
    per_seq = (b.mlm_cu_seqlens[1:] - b.mlm_cu_seqlens[:-1]).numpy()
    maskable = np.array([int((~np.isin(s.numpy(), list(c.tok.special_ids))).sum()) for s in
                         torch.split(torch.from_numpy(c.flat_tokens(c.sample_ids(0, 8))[0]), lens.tolist())])
    assert np.all((per_seq == np.floor(0.15 * maskable)) | (per_seq == np.ceil(0.15 * maskable)))


def _steps(c, cfg, start, stop, position=None, workers=0, rank=0, world=1):
    ds = StepDataset(c, budget=make_budget(c, cfg, rank, world))
    loader = step_loader(ds, start, stop, workers, position=position)
    return [mb for step in loader for mb in step], loader.sampler


def _same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        for f in ("input_ids", "mlm_positions", "mlm_labels", "cu_seqlens", "sample_index"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f


BUDGETS = [[], ["data.batch_tokens=1024"], ["data.batch_tokens=1024", "data.micro_batch_tokens=256"]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("budget", BUDGETS, ids=["samples", "tokens", "tokens-accum"])
def test_resume_workers_and_ranks_give_the_same_batches(prepared_data, mode, budget):
    c, cfg = _collator(prepared_data, f"data.packing={mode}", "data.batch_size=16", "data.micro_batch_size=8",
                       *budget)
    full, sampler = _steps(c, cfg, 0, 6)
    k = len(full) // 6
    position = sampler.position(3)
    resumed, _ = _steps(c, cfg, 3, 6, position=position, workers=2)  # a fresh run from the checkpoint
    _same(resumed, full[3 * k:])
    # DDP = single process: two ranks together take the single process's micro-batches (micro a of rank r
    # is group a*world + r of the step); where the split differs (a token budget with no micro budget:
    # 1 group alone vs 1 per rank), each step still holds the same units
    ranks = [_steps(c, cfg, 0, 6, rank=r, world=2)[0] for r in (0, 1)]
    per_rank = len(ranks[0]) // 6
    merged = [mb for s in range(6) for a in range(per_rank) for r in (0, 1) for mb in [ranks[r][s * per_rank + a]]]
    if len(merged) == len(full):
        _same(merged, full)
    else:
        for s in range(6):
            got = torch.cat([m.sample_index for m in merged[2 * per_rank * s:2 * per_rank * (s + 1)]])
            want = torch.cat([m.sample_index for m in full[k * s:k * (s + 1)]])
            assert torch.equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_token_budget_fills_steps_and_never_repeats(prepared_data, mode):
    c, cfg = _collator(prepared_data, f"data.packing={mode}", "data.batch_tokens=2048",
                       "data.micro_batch_tokens=512")
    n_units = len(c.samples)
    steps = int(1.2 * c.samples.lengths(np.arange(n_units)).sum() / 2048) + 1  # a bit more than an epoch
    mbs, sampler = _steps(c, cfg, 0, steps)
    per_step = [sum(m.num_tokens for m in mbs[4 * s:4 * s + 4]) for s in range(steps)]
    assert all(2048 - L < t <= 2048 for t in per_step)
    assert all(m.num_tokens > 0 for m in mbs) and len(mbs) == 4 * steps
    positions = [sampler.position(s) for s in range(steps + 1)]
    assert positions[0] == 0 and all(b > a for a, b in zip(positions, positions[1:]))
    epoch_end = next(s for s, p in enumerate(positions) if p >= n_units)
    rows = c.sample_ids(0, positions[epoch_end - 1])
    assert len(np.unique(rows)) == len(rows)  # within the epoch: no unit twice


def test_token_budget_too_small_for_the_split_is_a_config_error(prepared_data):
    c, cfg = _collator(prepared_data, "data.batch_tokens=256", "data.micro_batch_tokens=64")
    with pytest.raises(ConfigError, match="data.batch_tokens=256 must be >="):
        make_budget(c, cfg, 0, 1)
    with pytest.raises(ConfigError, match="data.packing='pack' is not one of"):
        _collator(prepared_data, "data.packing=pack")
    with pytest.raises(ConfigError, match="micro_batch_tokens needs data.batch_tokens"):
        _collator(prepared_data, "data.micro_batch_tokens=64")
