"""Masking strategies: rates, 80-10-10, units, schedules, resume, workers, late insertion, bad input."""
import json
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from masklab.errors import ConfigError
from masklab.pretrain.data.collator import StepDataset, step_loader
from masklab.pretrain.masking import masking_rate, sample_rng
from tests.masking.conftest import batch_units, make_collator

UNITS = ["token", "whole_word", "span", "pmi"]


def _collator(data, pmi_table, *ov, **kw):
    return make_collator(data, *ov, pmi=pmi_table if "masking.unit=pmi" in ov else None, **kw)


@pytest.mark.parametrize("unit", UNITS + ["informask"])
def test_realised_rate_within_4_standard_errors(prepared_data, pmi_table, weights_table, unit):
    if unit == "informask":
        c = make_collator(prepared_data, "masking.unit=whole_word", "masking.rate=0.3", weights=weights_table)
    else:
        c = _collator(prepared_data, pmi_table, f"masking.unit={unit}", "masking.rate=0.3")
    n_pred = n_maskable = step = 0
    while n_maskable < 1_000_000:
        b = c(np.arange(step * 512, step * 512 + 512), step)
        n_pred += b.num_predictions
        n_maskable += b.num_maskable
        step += 1
    se = (0.3 * 0.7 / n_maskable) ** 0.5
    assert abs(n_pred / n_maskable - 0.3) < 4 * se, (unit, n_pred / n_maskable, se)


def test_bernoulli_token_rate_and_budget_floor_or_ceil(prepared_data):
    c = make_collator(prepared_data, "masking.selector=bernoulli", "masking.rate=0.3")
    n_pred = n_maskable = 0
    for step in range(80):
        b = c(np.arange(step * 512, step * 512 + 512), step)
        n_pred += b.num_predictions
        n_maskable += b.num_maskable
    assert abs(n_pred / n_maskable - 0.3) < 4 * (0.21 / n_maskable) ** 0.5
    c = make_collator(prepared_data, "masking.rate=0.3")
    for step in range(10):
        b = c(np.arange(step * 64, step * 64 + 64), step)
        per_seq = (b.mlm_cu_seqlens[1:] - b.mlm_cu_seqlens[:-1]).numpy()
        n = (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).numpy() - 2
        assert np.all((per_seq == np.floor(0.3 * n)) | (per_seq == np.ceil(0.3 * n)))


@pytest.mark.parametrize("per_unit", [False, True])
def test_80_10_10_chi_square_and_random_ids_not_special(prepared_data, per_unit):
    c = make_collator(prepared_data, "masking.unit=whole_word", f"masking.corrupt_per_unit={per_unit}")
    special = torch.tensor(sorted(c.tok.special_ids))
    counts = np.zeros(3)
    for step in range(60):
        b = c(np.arange(step * 256, step * 256 + 256), step)
        inp = b.input_ids[b.mlm_positions]
        is_mask = inp == c.tok.mask_id
        is_keep = inp == b.mlm_labels
        is_rand = ~is_mask & ~is_keep
        counts += [int(is_mask.sum()), int(is_rand.sum()), int(is_keep.sum())]
        assert not torch.isin(inp[is_rand], special).any()
    if per_unit:  # whole words share one draw: test the unit-level proportions only loosely
        assert np.allclose(counts / counts.sum(), [0.8, 0.1, 0.1], atol=0.02), counts
        return
    r = 1 / len(c.masker.replacement_ids)  # a random id can equal the original: it then looks kept
    expected = counts.sum() * np.array([0.8, 0.1 * (1 - r), 0.1 + 0.1 * r])
    p = stats.chisquare(counts, expected).pvalue
    assert p > 1e-3, (counts, expected, p)


def test_one_zero_zero_is_all_mask(prepared_data):
    c = make_collator(prepared_data, "+masking/wettig_40")
    b = c(np.arange(256), 0)
    assert b.mask_rate == 0.4 and torch.all(b.input_ids[b.mlm_positions] == c.tok.mask_id)


@pytest.mark.parametrize("unit", ["whole_word", "span", "pmi"])
def test_units_are_all_or_none_and_corrupted_alike(prepared_data, pmi_table, unit):
    c = _collator(prepared_data, pmi_table, f"masking.unit={unit}", "masking.corrupt_per_unit=true",
                  "masking.rate=0.3")
    multi = 0
    for step in range(4):
        ids = np.arange(step * 64, step * 64 + 64)
        b = c(ids, step)
        toks, _, units = batch_units(c, ids, step)
        sel = np.zeros(len(toks), bool)
        sel[b.mlm_positions.numpy()] = True
        inp = b.input_ids.numpy()
        kind = np.where(inp == c.tok.mask_id, 0, np.where(inp == toks, 2, 1))
        assert not sel[units < 0].any()  # specials never
        u = units[units >= 0]
        n_sel = np.bincount(u, weights=sel[units >= 0], minlength=u.max() + 1)
        size = np.bincount(u)
        assert np.all((n_sel == 0) | (n_sel == size))  # all or none
        multi += int((size > 1).sum())
        for k in (0, 1):  # a unit is all [MASK] or all random (a random id may equal the original)
            has = np.bincount(u, weights=sel[units >= 0] & (kind[units >= 0] == k), minlength=len(size)) > 0
            other = np.bincount(u, weights=sel[units >= 0] & (kind[units >= 0] == 1 - k), minlength=len(size)) > 0
            assert not np.any(has & other)
    assert multi > 0


def test_whole_word_units_follow_word_starts(prepared_data):
    c = make_collator(prepared_data, "masking.unit=whole_word")
    ids = np.arange(32)
    toks, lens, units = batch_units(c, ids, 0)
    _, bits, _ = c.flat_tokens(c.sample_ids(0, 32))
    maskable = units >= 0
    new_unit = np.concatenate([[True], units[1:] != units[:-1]]) & maskable
    prev_maskable = np.concatenate([[False], maskable[:-1]])
    assert np.array_equal(new_unit, maskable & (bits.astype(bool) | ~prev_maskable))


def _words(toks, units, bits, maskable):
    """Per unit: its words as token tuples (from word-start bits)."""
    out = {}
    start = maskable & (bits.astype(bool) | ~np.concatenate([[False], maskable[:-1]]))
    wid = np.cumsum(start) - 1
    for w in np.unique(wid[maskable]):
        idx = np.flatnonzero(maskable & (wid == w))
        out.setdefault(int(units[idx[0]]), []).append(tuple(toks[idx].tolist()))
    return out


def test_pmi_units_equal_table_matches(prepared_data, pmi_table):
    c = _collator(prepared_data, pmi_table, "masking.unit=pmi")
    table = c.masker.pmi
    ids = np.arange(48)
    toks, lens, units = batch_units(c, ids, 3)
    _, bits, _ = c.flat_tokens(c.sample_ids(0, 48))
    per_unit = _words(toks, units, bits, units >= 0)
    seq_words = [per_unit[u] for u in sorted(per_unit)]
    multi = [w for w in seq_words if len(w) > 1]
    assert multi, "no PMI n-gram matched"
    for w in multi:  # every multi-word unit is an n-gram of the table
        assert tuple(w) in table.ngrams[len(w)]
    # maximal: a table n-gram made of single-word units only would have been taken
    unit_len = [len(w) for w in seq_words]
    flat = [(w[0], i) for i, w in enumerate(seq_words) for _ in w]
    for n in table.ngrams:
        for i in range(len(flat) - n + 1):
            gram = tuple(x[0] for x in flat[i:i + n])
            units_i = {x[1] for x in flat[i:i + n]}
            if gram in table.ngrams[n] and all(unit_len[u] == 1 for u in units_i):
                # a match across a sample boundary is not a match
                starts = np.cumsum(lens) - lens
                assert False, ("missed PMI n-gram", n, i, starts)


def test_pmi_never_crosses_samples_and_bigram_is_one_unit(prepared_data, pmi_table):
    c = _collator(prepared_data, pmi_table, "masking.unit=pmi")
    gram = sorted(c.masker.pmi.ngrams[2])[0]
    w1, w2 = list(gram[0]), list(gram[1])
    cls, sep = c.tok.cls_id, c.tok.sep_id
    # sample 0 ends with w1, sample 1 starts with w2: no unit across; sample 2 holds the bigram
    s0, s1, s2 = [cls, *w1, sep], [cls, *w2, sep], [cls, *w1, *w2, sep]
    toks = np.array(s0 + s1 + s2)
    bits = np.array([1, 1] + [0] * (len(w1) - 1) + [1] + [1, 1] + [0] * (len(w2) - 1) + [1]
                    + [1, 1] + [0] * (len(w1) - 1) + [1] + [0] * (len(w2) - 1) + [1], np.uint8)
    units = c.masker.unit_ids(toks, bits, [len(s0), len(s1), len(s2)], np.arange(3), 0, 0)
    a, b = len(s0) + len(s1) + 1, len(toks) - 1
    assert len(set(units[a:b].tolist())) == 1  # the whole bigram is one unit
    assert units[1] != units[len(s0) + 1] and units[0] == -1 and units[-1] == -1


@pytest.mark.parametrize("law", ["truncated", "clip"])
def test_span_lengths_follow_the_closed_form(prepared_data, law):
    """SpanBERT's truncated geometric (p=0.2, max 10: mean 3.80, P(10)=3.0%) is the default; clipping
    (mean 4.46, P(10)=13.4%) only on request. Mean and P(len=max) within 4 standard errors."""
    ov = [] if law == "truncated" else ["masking.span_law=clip"]
    c = make_collator(prepared_data, "masking.unit=span", *ov)
    toks = np.concatenate([[c.tok.cls_id], np.full(60000, 100), [c.tok.sep_id]])
    units = c.masker.units(toks, np.ones(len(toks), np.uint8), sample_rng(0, 0, 0))
    lengths = np.bincount(units[units >= 0])[:-1]  # the last span is cut by the sequence end
    k = np.arange(1, 11)
    pmf = 0.2 * 0.8 ** (k - 1)
    if law == "truncated":
        pmf = pmf / (1 - 0.8 ** 10)
    else:
        pmf[-1] = 0.8 ** 9
    mean, var = (k * pmf).sum(), (k * k * pmf).sum() - (k * pmf).sum() ** 2
    assert mean == pytest.approx(3.797 if law == "truncated" else 4.463, abs=1e-3)
    n = len(lengths)
    assert lengths.max() <= 10 and lengths.min() >= 1
    assert abs(lengths.mean() - mean) < 4 * (var / n) ** 0.5, lengths.mean()
    p_max = pmf[-1]
    assert abs((lengths == 10).mean() - p_max) < 4 * (p_max * (1 - p_max) / n) ** 0.5


def test_schedules():
    assert masking_rate(0, 100, "linear", 0.3, 0.15) == 0.3
    assert masking_rate(100, 100, "linear", 0.3, 0.15) == pytest.approx(0.15)
    assert masking_rate(500, 100, "linear", 0.3, 0.15) == pytest.approx(0.15)  # clamped
    assert masking_rate(-5, 100, "cosine", 0.3, 0.15) == pytest.approx(0.3)
    for kind in ("linear", "cosine"):
        r = [masking_rate(s, 100, kind, 0.3, 0.15) for s in range(101)]
        assert all(a >= b for a, b in zip(r, r[1:])) and r[-1] == pytest.approx(0.15) and r[0] == 0.3
    up = [masking_rate(s, 100, "linear", 0.15, 0.3) for s in range(101)]
    assert all(a <= b for a, b in zip(up, up[1:]))
    assert masking_rate(49, 100, "step", 0.3, 0.15, 0.5) == 0.3 and masking_rate(50, 100, "step", 0.3, 0.15, 0.5) == 0.15
    assert masking_rate(7, 100, "constant", 0.2, 0.9) == 0.2
    with pytest.raises(ValueError):
        masking_rate(1, 10, "exp", 0.1, 0.2)


def test_rate_schedule_reaches_the_collator_and_eval_is_fixed(prepared_data):
    c = make_collator(prepared_data, "+masking/linear_schedule", "train.max_steps=10")
    assert c(np.arange(8), 0).mask_rate == 0.3 and c(np.arange(8), 10).mask_rate == pytest.approx(0.15)
    assert c(np.arange(8), 5).mask_rate == pytest.approx(0.225)
    assert c(np.arange(8), 3, evaluation=True).mask_rate == 0.15


@pytest.mark.parametrize("ov", [["masking.unit=whole_word", "+masking/linear_schedule"], ["masking.unit=pmi"],
                                ["masking.unit=span", "masking.insertion=late", "masking.insert_layer=2"]])
def test_resume_gives_identical_masks(prepared_data, pmi_table, ov):
    a = _collator(prepared_data, pmi_table, *ov, "train.max_steps=8")
    full = [a(np.arange(s * 16, s * 16 + 16), s) for s in range(8)]
    b = _collator(prepared_data, pmi_table, *ov, "train.max_steps=8")  # a fresh process resuming at step 5
    for s in range(5, 8):
        x, y = b(np.arange(s * 16, s * 16 + 16), s), full[s]
        for f in ("input_ids", "mlm_positions", "mlm_labels", "cu_seqlens", "sample_index"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
        assert x.mask_rate == y.mask_rate and x.num_maskable == y.num_maskable
        if x.visible_index is not None:
            assert torch.equal(x.visible_index, y.visible_index)


def test_same_masks_however_the_batch_is_split(prepared_data, pmi_table):
    c = _collator(prepared_data, pmi_table, "masking.unit=pmi", "masking.rate=0.3")
    whole = StepDataset(c, 32, 32)[5][0]
    parts = StepDataset(c, 32, 8, rank=1, world=2)[5]
    n0 = int(whole.cu_seqlens[8])
    assert torch.equal(parts[0].sample_index, whole.sample_index[8:16])
    assert torch.equal(parts[0].input_ids, whole.input_ids[n0:n0 + parts[0].num_tokens])


def test_determinism_across_workers(prepared_data):
    c = make_collator(prepared_data, "masking.unit=span")
    ds = StepDataset(c, 16, 8)
    runs = []
    for workers in (0, 2):
        runs.append([mb for step in step_loader(ds, 3, 6, num_workers=workers) for mb in step])
    assert len(runs[0]) == len(runs[1]) == 6
    for x, y in zip(*runs):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.mlm_labels, y.mlm_labels)


def test_mask_sample_matches_a_batch_of_one(prepared_data):
    c = make_collator(prepared_data, "masking.unit=whole_word", "masking.rate=0.3")
    tokens, ws = c.sample_tokens(3)
    m = c.masker.mask_sample(tokens, ws, sample_rng(0, 1, 2), 0.3)
    assert m.input_ids.shape == tokens.shape and np.all(np.diff(m.positions) > 0)
    assert np.array_equal(m.labels, tokens[m.positions]) and m.num_maskable == len(tokens) - 2
    m2 = c.masker.mask_sample(tokens, ws, sample_rng(0, 1, 2), 0.3)
    assert np.array_equal(m.input_ids, m2.input_ids)


def test_late_mode_partition_and_model_equivalence(prepared_data):
    from masklab.pretrain.model import build_model

    c = make_collator(prepared_data, "masking.insertion=late", "masking.insert_layer=2", "masking.rate=0.4",
                      "model.hidden_size=64", "model.num_layers=3", "model.num_heads=2", "model.intermediate_size=96",
                      "model.hidden_dropout=0")
    b = c(np.arange(8), 0)
    vis, ins = b.visible_index, b.insert_positions
    assert torch.equal(torch.cat([vis, ins]).sort().values, torch.arange(b.num_tokens))
    assert len(set(vis.tolist()) & set(ins.tolist())) == 0
    assert torch.all(vis[1:] > vis[:-1]) and torch.all(ins[1:] > ins[:-1])
    assert torch.all(b.input_ids[ins] == c.tok.mask_id) and not torch.any(b.input_ids[vis] == c.tok.mask_id)
    rand_or_kept = b.mlm_positions[b.input_ids[b.mlm_positions] != c.tok.mask_id]
    assert len(rand_or_kept) > 0 and torch.isin(rand_or_kept, vis).all()  # those stay visible
    lens_vis = b.cu_seqlens_visible[1:] - b.cu_seqlens_visible[:-1]
    seq_of_vis = torch.searchsorted(b.cu_seqlens[1:].long(), vis, right=True)
    assert torch.equal(torch.bincount(seq_of_vis, minlength=8), lens_vis.long())
    torch.manual_seed(0)
    m = build_model(c.cfg.model, c.tok, c.cfg.masking).eval()
    with torch.no_grad():
        ours = m._encode_late(b)
        # reference by plain indexing: the visible stream (original positions) through layers < 2,
        # then [MASK] embeddings at the slots' original positions put in place
        h = m.embeddings(b.input_ids[vis], b.position_ids[vis])
        for layer in m.layers[:2]:
            h = layer(h, b.cu_seqlens_visible, b.max_seqlen_visible)
        full = torch.zeros(b.num_tokens, h.shape[1])
        full[vis] = h
        full[ins] = m.embeddings(torch.full_like(ins, c.tok.mask_id), b.position_ids[ins])
        torch.testing.assert_close(ours, full)
        torch.testing.assert_close(m.layers[2](ours, b.cu_seqlens, b.max_seqlen),
                                   m.layers[2](full, b.cu_seqlens, b.max_seqlen))
        out = m(b)
        assert torch.isfinite(out["loss_sum"]) and int(out["num_predictions"]) == b.num_predictions


@pytest.mark.parametrize("ov,needle", [
    (["masking.rate=1.2"], "masking.rate"),
    (["masking.eval_rate=-0.1"], "masking.eval_rate"),
    (["masking.insertion=late", "masking.insert_layer=4"], "insert_layer"),
    (["masking.insertion=late", "masking.insert_layer=0"], "insert_layer"),
    (["masking.unit=pmi"], "pmi_table"),
    (["masking.unit=pmi", "masking.pmi_table=/nonexistent"], "pmi_table=/nonexistent: no such directory"),
    (["masking.unit=pmi", "masking.pmi_table=."], "not a PMI table"),
    (["masking.span_p=0"], "span_p"),
    (["masking.span_law=cut"], "span_law='cut' is not one of truncated, clip"),
])
def test_bad_masking_config(prepared_data, ov, needle):
    with pytest.raises(ConfigError, match=needle):
        make_collator(prepared_data, *ov)


@pytest.mark.parametrize("table", ["pmi", "weights"])
def test_table_from_another_tokenizer_is_refused(prepared_data, pmi_table, weights_table, tmp_path, table):
    src = pmi_table if table == "pmi" else weights_table
    other = tmp_path / "t"
    shutil.copytree(src, other)
    m = json.loads((other / "manifest.json").read_text())
    m["tokenizer_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="another tokenizer"):
        if table == "pmi":
            make_collator(prepared_data, "masking.unit=pmi", pmi=other)
        else:
            make_collator(prepared_data, weights=other)


@pytest.mark.parametrize("unit", ["whole_word", "span", "pmi"])
def test_word_units_need_word_starts(prepared_data, pmi_table, tmp_path, unit):
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    m = json.loads((data / "manifest.json").read_text())
    m["word_starts"] = False
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="word boundaries"):
        _collator(data, pmi_table, f"masking.unit={unit}")
    make_collator(data, "masking.unit=token")  # token masking does not need them


def test_informask_weights_give_sampling_without_replacement_proportional_to_weight(prepared_data):
    """Two one-token units, a budget of exactly one token: the Gumbel / exponential race takes
    unit a with probability w_a / (w_a + w_b), and the weights change nothing else."""
    from masklab.pretrain.masking import Masker

    c = make_collator(prepared_data, "masking.rate=0.5")
    a, b = sorted(set(range(c.tok.vocab_size)) - set(c.tok.special_ids))[:2]
    weights = np.ones(c.tok.vocab_size)
    weights[a], weights[b] = 3.0, 1.0
    masker = Masker(c.cfg.masking, c.tok, None, weights)
    n = 40_000
    tokens = np.tile([c.tok.cls_id, a, b, c.tok.sep_id], n)
    m = masker.mask_flat(tokens, np.ones(len(tokens), np.uint8), np.full(n, 4), np.arange(n), 0, 0, 0.5)
    assert np.all(m.num_predictions == 1)
    share_a = float(np.mean(m.labels == a))
    assert abs(share_a - 0.75) < 4 * (0.75 * 0.25 / n) ** 0.5, share_a
    # uniform weights: an even split (the unweighted selector's behaviour)
    flat = Masker(c.cfg.masking, c.tok, None, np.ones(c.tok.vocab_size))
    m = flat.mask_flat(tokens, np.ones(len(tokens), np.uint8), np.full(n, 4), np.arange(n), 0, 0, 0.5)
    assert abs(float(np.mean(m.labels == a)) - 0.5) < 4 * (0.25 / n) ** 0.5
