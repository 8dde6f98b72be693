"""Masking strategies: rates, 80-10-10, units, schedules, determinism, late insertion, bad input."""
import numpy as np
import pytest
import torch
from scipy import stats

from data_prep import ShardSet
from masklab.config import load_config
from masklab.errors import ConfigError
from pretrain.data import Collator, StepDataset, step_loader
from pretrain.masking import masking_rate
from pretrain.masking.segment import segment


@pytest.fixture(scope="module")
def pmi_table(prepared_data, tmp_path_factory):
    from data_prep.pmi import build_pmi_table

    out = tmp_path_factory.mktemp("pmi") / "table"
    build_pmi_table(str(prepared_data), str(out), min_count=2, size=600, progress=False)
    return out


def collator(prepared_data, *ov, pmi=None):
    extra = [f"masking.pmi_table={pmi}"] if pmi else []
    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=128", *extra, *ov])
    return Collator(cfg, ShardSet(prepared_data, "train"))


@pytest.mark.parametrize("unit", ["token", "whole_word", "span", "pmi"])
def test_realised_rate_within_4_standard_errors(prepared_data, pmi_table, unit):
    c = collator(prepared_data, f"masking.unit={unit}", "masking.rate=0.3", pmi=pmi_table)
    n_pred = n_maskable = step = 0
    while n_maskable < 1_000_000:
        b = c(np.arange(step * 256, step * 256 + 256), step)
        n_pred += b.num_predictions
        n_maskable += b.num_maskable
        step += 1
    se = (0.3 * 0.7 / n_maskable) ** 0.5
    assert abs(n_pred / n_maskable - 0.3) < 4 * se, (unit, n_pred / n_maskable, se)


def test_80_10_10_chi_square_and_random_ids_not_special(prepared_data):
    c = collator(prepared_data)
    special = set(c.tok.special_ids)
    counts = np.zeros(3)
    for step in range(40):
        ids = np.arange(step * 64, step * 64 + 64)
        b = c(ids, step)
        inp = b.input_ids[b.mlm_positions]
        is_mask = inp == c.tok.mask_id
        is_keep = inp == b.mlm_labels
        is_rand = ~is_mask & ~is_keep
        counts += [int(is_mask.sum()), int(is_rand.sum()), int(is_keep.sum())]
        assert not any(int(t) in special for t in inp[is_rand])
    # a random draw can equal the original id (then it counts as kept): expected keep is 0.1 + 0.1/V
    expected = counts.sum() * np.array([0.8, 0.1, 0.1])
    p = stats.chisquare(counts, expected).pvalue
    assert p > 1e-3, (counts, expected, p)


def test_bernoulli_mode_and_wettig_recipe(prepared_data):
    c = collator(prepared_data, "masking.selector=bernoulli", "masking.rate=0.4", "masking.mask_prob=1.0",
                 "masking.random_prob=0", "masking.keep_prob=0")
    b = c(np.arange(256), 0)
    assert torch.all(b.input_ids[b.mlm_positions] == c.tok.mask_id)
    assert abs(b.num_predictions / b.num_maskable - 0.4) < 0.03


@pytest.mark.parametrize("unit", ["whole_word", "span", "pmi"])
def test_units_are_all_or_none_and_corrupted_alike(prepared_data, pmi_table, unit):
    c = collator(prepared_data, f"masking.unit={unit}", "masking.corrupt_per_unit=true", pmi=pmi_table)
    for step in range(5):
        ids = np.arange(step * 32, step * 32 + 32)
        rows = c.sample_ids(int(ids[0]), 32)
        b = c(ids, step)
        offset = 0
        for g, r in zip(ids, rows):
            tokens, ws = c.sample_tokens(int(r))
            rng = __import__("pretrain.masking", fromlist=["sample_rng"]).sample_rng(c.seed, step, int(g))
            units = c.masker.units(tokens, ws, rng)
            pos = b.mlm_positions[(b.mlm_positions >= offset) & (b.mlm_positions < offset + len(tokens))] - offset
            sel = np.zeros(len(tokens), bool)
            sel[pos.numpy()] = True
            kind = np.full(len(tokens), -1)
            inp = b.input_ids[offset:offset + len(tokens)].numpy()
            kind[sel] = np.where(inp[sel] == c.tok.mask_id, 0, np.where(inp[sel] == tokens[sel], 2, 1))
            for u in np.unique(units[units >= 0]):
                member = units == u
                assert sel[member].all() or not sel[member].any()
                if sel[member].any():
                    assert len(set(kind[member].tolist()) - {2}) <= 1  # random==original can look "kept"
            offset += len(tokens)


def test_whole_word_units_follow_word_starts(prepared_data):
    c = collator(prepared_data, "masking.unit=whole_word")
    tokens, ws = c.sample_tokens(5)
    units = c.masker.units(tokens, ws, np.random.default_rng(0))
    maskable = units >= 0
    new_unit = np.concatenate([[True], units[1:] != units[:-1]])
    assert np.array_equal((new_unit & maskable)[1:-1], (ws.astype(bool) & maskable)[1:-1])


def test_pmi_units_equal_table_matches(pmi_table, prepared_data):
    from data_prep.pmi import load_pmi_table

    table = load_pmi_table(str(pmi_table))
    ngram = next(iter(table.ngrams[2]))
    words = [list(w) for w in ngram]
    toks = np.array([2] + words[0] + words[1] + [7, 8, 3], dtype=np.int64)
    ws = np.array([1] + [1] + [0] * (len(words[0]) - 1) + [1] + [0] * (len(words[1]) - 1) + [1, 1, 1], np.uint8)
    maskable = ~np.isin(toks, [0, 1, 2, 3, 4])
    cfg = load_config(None, ["data.shards=x"]).masking
    units = segment("pmi", toks, ws, maskable, np.random.default_rng(0), cfg, table)
    n = len(words[0]) + len(words[1])
    assert len(set(units[1:1 + n].tolist())) == 1  # the whole bigram is one unit
    assert units[0] == -1 and units[-1] == -1


def test_span_lengths_are_geometric_and_capped():
    cfg = load_config(None, ["data.shards=x", "masking.unit=span"]).masking
    toks = np.arange(10, 5010)
    units = segment("span", toks, np.ones(5000, np.uint8), np.ones(5000, bool), np.random.default_rng(0), cfg)
    lengths = np.bincount(units)
    assert lengths.max() <= 10 and abs(lengths[:-1].mean() - 1 / 0.2 * (1 - 0.8 ** 10)) < 0.3


def test_chinese_sentence_is_split_into_words(tmp_path):
    from data_prep import PrepOptions, prepare

    src = tmp_path / "zh"
    src.mkdir()
    (src / "a.txt").write_text("我们今天在北京大学学习自然语言处理。\n\n" * 30 + "机器学习是人工智能的一个分支。\n")
    out = tmp_path / "out"
    prepare(PrepOptions(source=str(src), out=str(out), vocab_size=300, cjk_segmenter="jieba", validation_fraction=0))
    s = ShardSet(out)
    ws = np.asarray(s.shards[0].word_starts[:17])
    n_words = int(ws.sum())
    assert 1 < n_words < 17, ws  # not one unit, and not one unit per character


def test_schedules():
    assert masking_rate(0, 100, "linear", 0.3, 0.15) == 0.3
    assert masking_rate(100, 100, "linear", 0.3, 0.15) == pytest.approx(0.15)
    assert masking_rate(500, 100, "linear", 0.3, 0.15) == pytest.approx(0.15)  # clamped
    assert masking_rate(-5, 100, "cosine", 0.3, 0.15) == pytest.approx(0.3)
    r = [masking_rate(s, 100, "cosine", 0.3, 0.15) for s in range(101)]
    assert all(a >= b for a, b in zip(r, r[1:])) and r[-1] == pytest.approx(0.15)
    assert masking_rate(49, 100, "step", 0.3, 0.15, 0.5) == 0.3 and masking_rate(50, 100, "step", 0.3, 0.15, 0.5) == 0.15
    assert masking_rate(7, 100, "constant", 0.2, 0.9) == 0.2


def test_rate_schedule_reaches_the_collator_and_eval_is_fixed(prepared_data):
    c = collator(prepared_data, "masking.schedule=linear", "masking.rate=0.3", "masking.rate_end=0.15",
                 "train.max_steps=10")
    assert c(np.arange(8), 0).mask_rate == 0.3 and c(np.arange(8), 10).mask_rate == pytest.approx(0.15)
    assert c(np.arange(8), 3, evaluation=True).mask_rate == 0.15


def test_resume_gives_identical_masks(prepared_data):
    a = collator(prepared_data, "masking.unit=whole_word")
    full = [a(np.arange(s * 16, s * 16 + 16), s) for s in range(8)]
    b = collator(prepared_data, "masking.unit=whole_word")  # a fresh process resuming at step 5
    for s in range(5, 8):
        x = b(np.arange(s * 16, s * 16 + 16), s)
        assert torch.equal(x.input_ids, full[s].input_ids) and torch.equal(x.mlm_positions, full[s].mlm_positions)
        assert x.mask_rate == full[s].mask_rate


def test_determinism_across_workers(prepared_data):
    c = collator(prepared_data, "masking.unit=span")
    ds = StepDataset(c, 16, 8)
    runs = []
    for workers in (0, 2):
        runs.append([mb for step in step_loader(ds, 3, 7, num_workers=workers) for mb in step])
    for x, y in zip(*runs):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.mlm_labels, y.mlm_labels)


def test_late_mode_partition_and_model_equivalence(prepared_data):
    from pretrain.model import build_model

    c = collator(prepared_data, "masking.insertion=late", "masking.insert_layer=1", "masking.rate=0.4",
                 "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=96",
                 "model.hidden_dropout=0")
    b = c(np.arange(8), 0)
    vis, ins = b.visible_index, b.insert_positions
    both = torch.cat([vis, ins]).sort().values
    assert torch.equal(both, torch.arange(b.num_tokens)) and len(set(vis.tolist()) & set(ins.tolist())) == 0
    assert torch.all(vis[1:] > vis[:-1]) and torch.all(ins[1:] > ins[:-1])
    assert torch.all(b.input_ids[ins] == c.tok.mask_id)
    torch.manual_seed(0)
    m = build_model(c.cfg.model, c.tok, c.cfg.masking).eval()
    with torch.no_grad():
        ours = m._encode_late(b)
        # reference by plain indexing: visible stream through layer 0, [MASK] embeddings put in place
        h = m.embeddings(b.input_ids[vis], b.position_ids[vis])
        h = m.layers[0](h, b.cu_seqlens_visible, b.max_seqlen_visible)
        full = torch.zeros(b.num_tokens, h.shape[1])
        full[vis] = h
        full[ins] = m.embeddings(torch.full_like(ins, c.tok.mask_id), b.position_ids[ins])
        torch.testing.assert_close(ours, full)
        torch.testing.assert_close(m.layers[1](ours, b.cu_seqlens, b.max_seqlen),
                                   m.layers[1](full, b.cu_seqlens, b.max_seqlen))


@pytest.mark.parametrize("ov,needle", [
    (["masking.rate=1.2"], "masking.rate"),
    (["masking.insertion=late", "masking.insert_layer=4"], "insert_layer"),
    (["masking.unit=pmi"], "pmi_table"),
])
def test_bad_masking_config(prepared_data, ov, needle):
    with pytest.raises(ConfigError, match=needle):
        collator(prepared_data, *ov)


def test_pmi_table_from_another_tokenizer_is_refused(prepared_data, pmi_table, tmp_path):
    import json
    import shutil

    other = tmp_path / "pmi"
    shutil.copytree(pmi_table, other)
    m = json.loads((other / "manifest.json").read_text())
    m["tokenizer_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="another tokenizer"):
        collator(prepared_data, "masking.unit=pmi", pmi=other)


def test_word_units_need_word_starts(prepared_data, tmp_path):
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    m = json.loads((data / "manifest.json").read_text())
    m["word_starts"] = False
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="word boundaries"):
        collator(data, "masking.unit=whole_word")
