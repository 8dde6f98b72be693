"""Both presets: HF export/import equality, round trips, padded vs unpadded, PLL, bad input."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, ModernBertConfig, \
    ModernBertForMaskedLM, pipeline

from data_prep import load_tokenizer
from masklab.config import load_config, to_yaml
from masklab.errors import CheckpointError, ConfigError
from pretrain.checkpoint import save_checkpoint
from pretrain.hf_io import export_hf, import_hf, load_pretrained
from pretrain.model import build_model

PRESETS = {
    "bert": ["model.preset=bert", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
             "model.intermediate_size=96"],
    "modernbert": ["model.preset=modernbert", "model.hidden_size=64", "model.num_layers=4", "model.num_heads=2",
                   "model.intermediate_size=96", "model.local_window=8", "model.global_attn_every=3",
                   "model.layer_norm_eps=1e-5"],
}


def checkpoint(prepared_data, tmp_path, preset, extra=()):
    cfg = load_config(None, [f"data.shards={prepared_data}", "model.hidden_dropout=0", *PRESETS[preset], *extra])
    _, info = load_tokenizer(prepared_data / "tokenizer")
    torch.manual_seed(0)
    m = build_model(cfg.model, info)
    with torch.no_grad():  # non-trivial biases / norms so a mapping mistake shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_checkpoint(tmp_path / "run", 5, m, None, {}, to_yaml(cfg), prepared_data / "tokenizer"), m


def mixed_batch(V, B=3, L=23):
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([L, 7, 15])[:B]
    mask = (torch.arange(L)[None] < lens[:, None]).long()
    return torch.randint(5, V, (B, L), generator=g) * mask, mask


@pytest.mark.parametrize("preset", ["bert", "modernbert"])
def test_export_loads_without_remote_code_with_equal_logits(prepared_data, tmp_path, preset):
    ck, m = checkpoint(prepared_data, tmp_path, preset)
    out = export_hf(ck, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == m.vocab_size and cfg["vocab_size"] % 64 == 0  # the padded vocab
    hf = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=False).eval()
    assert type(hf) is {"bert": BertForMaskedLM, "modernbert": ModernBertForMaskedLM}[preset]
    ids, mask = mixed_batch(1000)
    m.eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        ours = m.mlm_logits(m.forward_padded(ids, mask))
        real = mask.bool()
        torch.testing.assert_close(ours[real], ref[real], atol=2e-5, rtol=1e-5)
        base = AutoModel.from_pretrained(out).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(m.forward_padded(ids, mask)[real], base[real], atol=2e-5, rtol=1e-5)
    # ours -> HF -> ours gives identical tensors
    back, _, _ = import_hf(out)
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    fill = pipeline("fill-mask", model=str(out), tokenizer=str(out))
    assert len(fill("the [MASK] statement")) == 5


@pytest.mark.parametrize("preset", ["bert", "modernbert"])
def test_import_random_hf_model(tmp_path, preset, prepared_data):
    torch.manual_seed(4)
    common = dict(vocab_size=128, hidden_size=64, num_attention_heads=2, intermediate_size=96)
    if preset == "bert":
        hf = BertForMaskedLM(BertConfig(num_hidden_layers=2, hidden_dropout_prob=0, attention_probs_dropout_prob=0,
                                        **common)).eval()
    else:
        hf = ModernBertForMaskedLM(ModernBertConfig(num_hidden_layers=4, local_attention=8,
                                                    layer_types=["full_attention", "sliding_attention",
                                                                 "sliding_attention", "full_attention"],
                                                    pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
                                                    sep_token_id=3, **common)).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok, _ = load_tokenizer(prepared_data / "tokenizer")
    small = __import__("data_prep").train_tokenizer(["a b c d e f g"] * 10, vocab_size=100)
    small.save(str(tmp_path / "hf" / "tokenizer.json"))
    ours, _, cfg = import_hf(tmp_path / "hf")
    assert cfg.model.preset == preset
    ids, mask = mixed_batch(128)
    with torch.no_grad():
        torch.testing.assert_close(ours.mlm_logits(ours.forward_padded(ids, mask))[mask.bool()],
                                   hf(input_ids=ids, attention_mask=mask).logits[mask.bool()], atol=2e-5, rtol=1e-5)


def test_modernbert_unpadded_equals_per_sequence(prepared_data, tmp_path):
    _, m = checkpoint(prepared_data, tmp_path, "modernbert")
    m.eval()
    ids, mask = mixed_batch(1000)
    with torch.no_grad():
        padded = m.forward_padded(ids, mask)
        for b in range(3):
            n = int(mask[b].sum())
            one = m.encode(ids[b, :n], torch.tensor([0, n], dtype=torch.int32), n, torch.arange(n))
            torch.testing.assert_close(padded[b, :n], one, atol=1e-5, rtol=1e-5)


def test_modernbert_trains(prepared_data, tmp_path):
    from pretrain.train import train
    from tests.conftest import TINY

    cfg = load_config("configs/modernbert_smoke_cpu.yaml",
                      TINY + [f"data.shards={prepared_data}", f"train.out_dir={tmp_path / 'run'}", "model.num_layers=4",
                              "model.local_window=16", "train.max_steps=40", "train.eval_every=40", "train.lr=3e-3"])
    r = train(cfg)
    assert r["last"]["eval_loss"] < 0.8 * r["first_eval"]["loss"]


def test_pll_batched_equals_one_at_a_time_and_rises_with_training(prepared_data, tmp_path):
    from pretrain.pll import pll_tokens

    _, m = checkpoint(prepared_data, tmp_path, "bert")
    m.eval()
    tok, info = load_tokenizer(prepared_data / "tokenizer")
    ids = torch.tensor(tok.encode("the for statement is used to iterate over a sequence").ids)
    special = set(info.special_ids)
    batched = pll_tokens(m, ids, special, info.mask_id)
    single = torch.cat([pll_tokens(m, ids, special, info.mask_id, max_copies=1)])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-6)
    before = float(batched.sum())
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    for step in range(30):  # learn the sentence: mask every token in turn
        t = 1 + step % (len(ids) - 2)
        x = ids.clone()
        x[t] = info.mask_id
        h = m.encode(x, torch.tensor([0, len(ids)], dtype=torch.int32), len(ids), torch.arange(len(ids)))
        loss = torch.nn.functional.cross_entropy(m.mlm_logits(h[t:t + 1]), ids[t:t + 1])
        loss.backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    assert float(pll_tokens(m, ids, special, info.mask_id).sum()) > before


def test_evaluate_cli(prepared_data, tmp_path):
    import os
    import subprocess
    import sys

    ck, _ = checkpoint(prepared_data, tmp_path, "bert")
    r = subprocess.run([sys.executable, "-m", "masklab.cli", "evaluate", str(ck), "--shards", str(prepared_data),
                        "--batches", "2", "--pll-sentences", "2"], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"loss", "mlm_acc", "pll_per_token", "pseudo_perplexity"} <= set(out)


def test_bad_inputs(prepared_data, tmp_path):
    ck, _ = checkpoint(prepared_data, tmp_path, "modernbert", extra=["model.local_window=7"])
    with pytest.raises(CheckpointError, match="local_window=7"):
        export_hf(ck, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    from transformers import RobertaConfig, RobertaForMaskedLM

    RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37)).save_pretrained(tmp_path / "roberta")
    with pytest.raises(CheckpointError, match="model_type 'roberta'"):
        import_hf(tmp_path / "roberta")
    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37)).save_pretrained(tmp_path / "small")
    tok, _ = load_tokenizer(prepared_data / "tokenizer")  # 2000 ids > 50
    tok.save(str(tmp_path / "small" / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="exceeds the model"):
        import_hf(tmp_path / "small")
    with pytest.raises(ConfigError, match="global last layer"):
        load_config(None, ["data.shards=x", "model.preset=modernbert", "model.num_layers=4",
                           "model.global_attn_every=2", "model.sparse_prediction=last_layer"])
