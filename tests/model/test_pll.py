"""Pseudo-log-likelihood (batched = naive one-at-a-time, rises with training) and `masklab evaluate`."""
import json
import os
import subprocess
import sys

import pytest
import torch

from masklab.data_prep import load_tokenizer
from masklab.pretrain.evaluate.pll import pll_report, pll_tokens
from tests.model.tiny_models import checkpoint

SENTENCE = "the for statement is used to iterate over the elements of a sequence such as a string tuple or list"


def _naive_pll(m, ids, special, mask_id):
    """Reference: one padded forward per masked copy, full logits, no packing."""
    out = []
    for t in range(len(ids)):
        if int(ids[t]) in special:
            continue
        x = ids.clone()
        x[t] = mask_id
        h = m.forward_padded(x[None], torch.ones(1, len(ids), dtype=torch.long))[0]
        out.append(torch.log_softmax(m.mlm_logits(h[t]).double(), -1)[ids[t]])
    return torch.stack(out)


@pytest.mark.parametrize("preset", ["bert", "modernbert"])
def test_pll_batched_equals_one_at_a_time(prepared_data, tmp_path, preset):
    _, m = checkpoint(prepared_data, tmp_path, preset)
    tok, info = load_tokenizer(prepared_data / "tokenizer")
    ids = torch.tensor(tok.encode(SENTENCE).ids)
    assert preset == "bert" or len(ids) > 2 * m.cfg.local_window  # modernbert: local and global layers
    special = set(info.special_ids)
    with torch.no_grad():
        ref = _naive_pll(m, ids, special, info.mask_id)
    batched = pll_tokens(m, ids, special, info.mask_id)
    assert len(batched) == len(ids) - 2  # every token but [CLS] / [SEP]
    torch.testing.assert_close(batched, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(pll_tokens(m, ids, special, info.mask_id, max_copies=3), ref, atol=1e-6, rtol=1e-6)
    rep = pll_report(m, tok, [SENTENCE, SENTENCE], special, info.mask_id)
    assert rep["tokens"] == 2 * len(ref) and rep["sentences"] == 2
    assert abs(rep["pll_per_token"] - float(batched.mean())) < 1e-9
    assert abs(rep["pseudo_perplexity"] - float(torch.exp(-batched.mean()))) < 1e-9


def test_pll_rises_when_trained_on_the_sentence(prepared_data, tmp_path):
    _, m = checkpoint(prepared_data, tmp_path, "modernbert")
    tok, info = load_tokenizer(prepared_data / "tokenizer")
    ids = torch.tensor(tok.encode(SENTENCE).ids)
    special, L = set(info.special_ids), len(ids)
    before = float(pll_tokens(m, ids, special, info.mask_id).sum())
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):  # the repeated sentence, 4 copies per step with one random masked token each
        t = torch.randint(1, L - 1, (4,), generator=g)
        x = ids.repeat(4, 1)
        x[torch.arange(4), t] = info.mask_id
        h = m.encode(x.flatten(), torch.arange(0, 5 * L, L, dtype=torch.int32), L, torch.arange(L).repeat(4))
        out = m.mlm_loss(h, torch.arange(4) * L + t, ids[t])
        (out["loss_sum"] / 4).backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    after = float(pll_tokens(m, ids, special, info.mask_id).sum())
    assert after > before + 0.5 * abs(before), (before, after)


def test_evaluate_cli(prepared_data, tmp_path, capsys):
    from masklab.cli import main

    ck, _ = checkpoint(prepared_data, tmp_path, "modernbert")
    argv = ["evaluate", str(ck), "--shards", str(prepared_data), "--batches", "2", "--batch-size", "8",
            "--pll-sentences", "2", "--device", "cpu"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"loss", "mlm_acc", "pll_per_token", "pseudo_perplexity", "predictions"} <= set(out)
    assert out["sentences"] == 2 and out["predictions"] > 0 and 0 <= out["mlm_acc"] <= 1
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == out  # fixed rate and seed: the same numbers every time
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "evaluate", str(ck), "--shards", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 2 and "error" in r.stderr and "Traceback" not in r.stderr  # bad --shards: one clear line


def test_pll_skips_samples_with_nothing_to_score(prepared_data, tmp_path, caplog):
    from masklab.pretrain.evaluate.pll import pll_report_ids

    _, m = checkpoint(prepared_data, tmp_path, "bert")
    _, info = load_tokenizer(prepared_data / "tokenizer")
    only_specials = torch.tensor([info.cls_id, info.sep_id])
    assert len(pll_tokens(m, only_specials, set(info.special_ids), info.mask_id)) == 0  # used to raise
    rep = pll_report_ids(m, [only_specials, torch.tensor([info.cls_id, 50, 60, info.sep_id])],
                         set(info.special_ids), info.mask_id)
    assert rep["sentences"] == 1 and rep["skipped_sentences"] == 1 and rep["tokens"] == 2
    assert "skipped 1 sentence" in caplog.text
