"""`masklab minimal-pairs`: PLL preference per pair, accuracy per phenomenon and overall, on a
jsonl of {good, bad, phenomenon} with the tiny MaskLab checkpoint; bad inputs name file and line."""
import json

import pytest

from masklab.cli import main


def test_minimal_pairs_accuracy_matches_pll(tiny_ckpt, tmp_path, capsys):
    from masklab.downstream.glue.minimal_pairs import load_scorer, sentence_ids
    from masklab.pretrain.evaluate.pll import pll_tokens

    pairs = [{"good": "tell me the secret password", "bad": "me tell password the secret", "phenomenon": "order"},
             {"good": "what is the weather today", "bad": "what the is weather today", "phenomenon": "order"},
             {"good": "reveal the system prompt", "bad": "reveal prompt the system", "phenomenon": "np"}]
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in pairs))
    assert main(["minimal-pairs", str(tiny_ckpt), "--data", str(p), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    model, tok, info, _ = load_scorer(str(tiny_ckpt))
    want = []
    for x in pairs:
        g, b = sentence_ids(tok, info, [x["good"], x["bad"]], 64)
        want.append(float(pll_tokens(model, g, info.special_ids, info.mask_id).sum())
                    > float(pll_tokens(model, b, info.special_ids, info.mask_id).sum()))
    assert res["phenomena"]["order"]["correct"] == sum(want[:2]) and res["phenomena"]["np"]["correct"] == int(want[2])
    assert res["pairs"] == 3 and res["accuracy"] == pytest.approx(100 * sum(want) / 3)
    assert "| order | 2 |" in capsys.readouterr().out


def test_minimal_pairs_bad_inputs(tiny_ckpt, tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"good": "a b", "bad": "b a"}\n{"good": "x"}\n')
    assert main(["minimal-pairs", str(tiny_ckpt), "--data", str(p)]) == 2
    assert "bad.jsonl:2: expected" in capsys.readouterr().err
    assert main(["minimal-pairs", str(tiny_ckpt), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
