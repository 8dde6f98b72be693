"""InforMask: informative relevance and token-specific rates equal a brute-force computation;
the rates reach the selector; tables are picked by score, checked and resolved against the cwd."""
import json
import math

import numpy as np
import pytest

from masklab.data_prep import ShardSet
from masklab.data_prep.informask import N_CANDIDATES, candidate_uniforms, corpus_arrays, informative_relevance, \
    token_rates
from masklab.data_prep.weights import load_token_weights
from masklab.errors import ConfigError
from tests.masking.conftest import make_collator


def _docs(data):
    toks, docs = corpus_arrays(ShardSet(data, "train"))
    return toks, docs, [toks[docs == d].tolist() for d in range(int(docs.max()) + 1)]


def test_informative_relevance_equals_brute_force(prepared_data):
    toks, docs, per_doc = _docs(prepared_data)
    D = len(per_doc)
    sets = [set(d) for d in per_doc]
    df, pair = {}, {}
    for s in sets:
        for x in s:
            df[x] = df.get(x, 0) + 1
            for y in s:
                pair[x, y] = pair.get((x, y), 0) + 1
    pmi = {k: math.log(v * D / (df[k[0]] * df[k[1]])) for k, v in pair.items()}
    want = [sum(pmi[d[i], d[j]] for j in range(len(d)) if j != i) for d in per_doc for i in range(len(d))]
    got = informative_relevance(toks, docs, ShardSet(prepared_data, "train").tokenizer.vocab_size)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-8)


def test_token_rates_equal_brute_force(prepared_data):
    toks, docs, per_doc = _docs(prepared_data)
    V = int(toks.max()) + 1
    ir = np.random.default_rng(0).normal(size=len(toks))  # any relevance: this tests the search
    maskable = np.ones(V, bool)
    maskable[[0, 5]] = False
    got, occ = token_rates(toks, docs, ir, maskable, V, rate=0.15, seed=3)
    starts = np.searchsorted(docs, np.arange(len(per_doc)))
    masked, seen = np.zeros(V), np.zeros(V)
    keys = [candidate_uniforms(3, len(toks), 2 * k) for k in range(N_CANDIDATES)]
    extra = candidate_uniforms(3, len(per_doc), 1)  # ONE rounding draw per document, shared by the candidates
    for d, seq in enumerate(per_doc):
        idx = [starts[d] + i for i, t in enumerate(seq) if maskable[t]]
        best, best_score = [], -np.inf
        budget = math.floor(0.15 * len(idx) + extra[d])
        for k in range(N_CANDIDATES):
            cand = sorted(idx, key=lambda i: keys[k][i])[:budget]
            score = sum(ir[i] for i in cand)
            if score > best_score:
                best, best_score = cand, score
        for i in idx:
            seen[toks[i]] += 1
        for i in best:
            masked[toks[i]] += 1
    want = np.where(seen > 0, masked / np.maximum(seen, 1), 0.15) * maskable
    np.testing.assert_array_equal(occ, seen)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("relevance", ["ones", "random"])
@pytest.mark.parametrize("doc_len,rate", [(10, 0.15), (7, 0.3), (40, 0.15)])
def test_best_of_n_search_keeps_the_build_rate(doc_len, rate, relevance):
    """The law, not the implementation: whatever the relevance, the search picks WHICH positions
    to mask, never how many, so the realised rate is the build rate (the issue's example: 10-token
    documents at 0.15 realised 0.1998 when each candidate drew its own budget rounding)."""
    D = 3000
    docs = np.repeat(np.arange(D), doc_len)
    toks = np.arange(D * doc_len) % 50 + 5
    ir = np.ones(len(toks)) if relevance == "ones" else np.random.default_rng(1).normal(size=len(toks))
    r, occ = token_rates(toks, docs, ir, np.ones(60, bool), 60, rate, 0)
    realised = (r * occ).sum() / occ.sum()
    # per-document budget = floor(rate * n + U): its mean over D documents has sd <= 0.5 / sqrt(D) / n
    tol = 5 * 0.5 / math.sqrt(D) / doc_len
    assert abs(realised - rate) <= tol, (realised, rate, tol)


def test_bernoulli_with_weights_masks_each_token_at_its_own_rate(prepared_data, tmp_path):
    c = make_collator(prepared_data, "masking.selector=bernoulli", "masking.rate=0.2")
    w = np.ones(c.tok.vocab_size)
    w[100], w[101], w[102] = 2.0, 0.5, 9.0  # 9 * 0.2 clips at 1
    c.masker.token_weights = w
    toks = np.concatenate([[c.tok.cls_id], np.tile([100, 101, 102], 20000), [c.tok.sep_id]])
    m = c.masker.mask_sample(toks, np.ones(len(toks), np.uint8), np.random.default_rng(0), 0.2)
    hit = np.bincount(toks[m.positions], minlength=103)
    for t, p in ((100, 0.4), (101, 0.1), (102, 1.0)):
        assert abs(hit[t] / 20000 - p) <= 4 * (p * (1 - p) / 20000) ** 0.5 + 1e-12, (t, hit[t])


def test_score_picks_the_table_and_old_tables_are_refused(prepared_data, weights_table, tmp_path):
    pmi = load_token_weights(str(weights_table), "pmi")
    surprisal = load_token_weights(str(weights_table), "surprisal")
    assert not np.allclose(pmi, surprisal) and pmi.min() >= 0
    m = json.loads((weights_table / "manifest.json").read_text())
    assert abs(m["pmi"]["realised_rate"] - 0.15) < 0.01
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({**m, "format": "masklab-token-weights-v1"}))
    with pytest.raises(ConfigError, match="format 'masklab-token-weights-v1' is not masklab-token-weights-v3"):
        load_token_weights(str(old))
    with pytest.raises(ConfigError, match="informask_score='idf' is not one of pmi, surprisal"):
        make_collator(prepared_data, "masking.informask_score=idf")


def test_informask_recipe_and_relative_tables_resolve_against_the_working_dir(prepared_data, weights_table,
                                                                               monkeypatch):
    from pathlib import Path

    from masklab.config import load_config
    from masklab.pretrain.data.collator import Collator

    smoke = str(Path("configs/smoke_cpu.yaml").resolve())
    monkeypatch.chdir(weights_table.parent)

    def collator(*ov):
        cfg = load_config(smoke, [f"data.shards={prepared_data}", "+masking/informask", *ov])
        return Collator(cfg, ShardSet(prepared_data, "train"))

    c = collator(f"masking.informask_weights={weights_table.name}")
    assert c.cfg.masking.selector == "bernoulli" and c.cfg.masking.informask_score == "pmi"
    np.testing.assert_array_equal(c.masker.token_weights, load_token_weights(str(weights_table), "pmi"))
    with pytest.raises(ConfigError, match="masking.informask_weights=runs/informask: no such directory .* resolved "
                                          "against the working directory"):
        collator()


def test_resume_of_a_run_trained_with_a_biased_v2_table_is_refused(prepared_data, weights_table):
    """Rebuilding the table changes the rates, hence the masks: a checkpoint from before the fix
    (no informask_table key) cannot continue with the v3 table; runs without a table are unaffected."""
    from omegaconf import OmegaConf

    from masklab.config_schema import MaskLabConfig
    from masklab.errors import MaskLabError
    from masklab.pretrain.loop.resume import check_resume_compatible
    from masklab.pretrain.masking import masking_compat

    cfg = OmegaConf.structured(MaskLabConfig)
    plain = masking_compat(cfg)
    old = {"compat": {k: v for k, v in plain.items()}}  # a pre-fix checkpoint: same keys, no table key
    check_resume_compatible(old, plain)
    cfg.masking.informask_weights = str(weights_table)
    now = masking_compat(cfg)
    assert now["masking.informask_table"] == "masklab-token-weights-v3"
    with pytest.raises(MaskLabError, match="masking.informask_table: checkpoint masklab-token-weights-v2"):
        check_resume_compatible(old, now)
    check_resume_compatible({"compat": now}, now)
