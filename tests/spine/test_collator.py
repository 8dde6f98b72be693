import numpy as np
import torch

from masklab.data_prep import ShardSet
from masklab.config import load_config
from masklab.pretrain.data.collator import Collator, StepDataset, build_samples


def _collator(prepared_data, *ov):
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=64", *ov])
    return Collator(cfg, ShardSet(prepared_data, "train")), cfg


def test_batch_contract(prepared_data):
    c, _ = _collator(prepared_data)
    b = c(np.arange(16), step=3)
    T = b.num_tokens
    assert b.input_ids.dtype == torch.int64 and b.input_ids.shape == (T,)
    assert b.cu_seqlens.dtype == torch.int32 and int(b.cu_seqlens[-1]) == T and b.batch_size == 16
    lens = b.cu_seqlens[1:] - b.cu_seqlens[:-1]
    assert int(lens.max()) == b.max_seqlen <= 64
    assert torch.equal(b.position_ids, torch.cat([torch.arange(int(n)) for n in lens]))
    assert torch.all(b.mlm_positions[1:] > b.mlm_positions[:-1])  # sorted, unique
    assert b.num_predictions == b.mlm_positions.numel() == b.mlm_labels.numel()
    assert int(b.mlm_cu_seqlens[-1]) == b.num_predictions
    # every sequence is [CLS] ... [SEP]
    starts, ends = b.cu_seqlens[:-1].long(), b.cu_seqlens[1:].long() - 1
    tok = c.tok
    assert torch.all(b.input_ids[starts] == tok.cls_id) and torch.all(b.input_ids[ends] == tok.sep_id)


def test_specials_never_masked_labels_are_originals(prepared_data):
    c, _ = _collator(prepared_data)
    special = set(c.tok.special_ids)
    for step in range(20):
        ids = np.arange(step * 32, step * 32 + 32)
        b = c(ids, step=step)
        originals = torch.cat([torch.from_numpy(c.sample_tokens(int(r))[0]) for r in c.sample_ids(int(ids[0]), 32)])
        assert not any(int(x) in special for x in b.mlm_labels)
        assert torch.equal(b.mlm_labels, originals[b.mlm_positions])
        unmasked = torch.ones(b.num_tokens, dtype=torch.bool)
        unmasked[b.mlm_positions] = False
        assert torch.equal(b.input_ids[unmasked], originals[unmasked])  # nothing else corrupted


def test_realised_rate_within_statistical_bounds(prepared_data):
    c, _ = _collator(prepared_data, "masking.selector=bernoulli")
    n_pred = n_maskable = 0
    for step in range(60):
        b = c(np.arange(step * 64, step * 64 + 64), step=step)
        n_pred += b.num_predictions
        n_maskable += b.num_maskable
    rate = n_pred / n_maskable
    se = (0.15 * 0.85 / n_maskable) ** 0.5
    assert abs(rate - 0.15) < 4 * se, (rate, n_maskable)


def test_budget_mode_gives_floor_or_ceil(prepared_data):
    c, _ = _collator(prepared_data)
    b = c(np.arange(64), step=0)
    per_seq = (b.mlm_cu_seqlens[1:] - b.mlm_cu_seqlens[:-1]).numpy()
    lens = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).numpy() - 2
    assert np.all((per_seq == np.floor(0.15 * lens)) | (per_seq == np.ceil(0.15 * lens)))


def test_deterministic_and_split_independent(prepared_data):
    c1, _ = _collator(prepared_data)
    c2, _ = _collator(prepared_data)
    a, b = c1(np.arange(100, 132), 7), c2(np.arange(100, 132), 7)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.mlm_positions, b.mlm_positions)
    # the same global samples give the same masks whether split into micro-batches or ranks
    whole = StepDataset(c1, 32, 32)[5][0]
    parts = StepDataset(c1, 32, 8, rank=1, world=2)[5]
    assert torch.equal(parts[0].sample_index, whole.sample_index[8:16])
    n0 = int(whole.cu_seqlens[8])
    assert torch.equal(parts[0].input_ids, whole.input_ids[n0:n0 + parts[0].num_tokens])


def test_samples_cover_corpus_once_per_epoch(prepared_data):
    c, _ = _collator(prepared_data)
    s = build_samples(c.shards, 64)
    assert int(s.length.sum()) == c.shards.num_tokens and int(s.length.max()) <= 62
    n = len(s)
    assert sorted(c.sample_ids(0, n).tolist()) == list(range(n))
