"""HF export / import for both presets: equality with transformers, round trips, fill-mask, bad input."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import (AutoModel, AutoModelForMaskedLM, BertConfig, BertForMaskedLM, ModernBertConfig,
                          ModernBertForMaskedLM, pipeline)

from masklab.data_prep import load_tokenizer, train_tokenizer
from masklab.errors import CheckpointError, ConfigError
from masklab.pretrain.hf.convert import export_hf, import_hf, load_pretrained
from tests.model.tiny_models import checkpoint, mixed_batch

TOL = dict(atol=2e-5, rtol=1e-5)  # fp32


@pytest.mark.parametrize("preset,extra", [("bert", []), ("modernbert", []),
                                          ("modernbert", ["model.local_window=7"])])  # odd window maps too
def test_export_loads_without_remote_code_with_equal_outputs(prepared_data, tmp_path, preset, extra):
    ck, m = checkpoint(prepared_data, tmp_path, preset, extra)
    out = export_hf(ck, tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == m.vocab_size and cfg["vocab_size"] % 64 == 0  # the padded vocab
    hf = AutoModelForMaskedLM.from_pretrained(str(out), trust_remote_code=False).eval()
    assert type(hf) is {"bert": BertForMaskedLM, "modernbert": ModernBertForMaskedLM}[preset]
    base = AutoModel.from_pretrained(str(out), trust_remote_code=False).eval()
    ids, mask = mixed_batch(1000)
    real = mask.bool()
    with torch.no_grad():
        h = m.forward_padded(ids, mask)
        torch.testing.assert_close(m.mlm_logits(h)[real], hf(input_ids=ids, attention_mask=mask).logits[real], **TOL)
        torch.testing.assert_close(h[real], base(input_ids=ids, attention_mask=mask).last_hidden_state[real], **TOL)
    back, _, back_cfg = import_hf(out)  # ours -> HF -> ours: identical tensors and architecture
    assert back.state_dict().keys() == m.state_dict().keys()
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "layer_norm_eps", "local_window",
              "global_attn_every", "rope_theta", "local_rope_theta", "vocab_size"):
        assert back_cfg.model[k] == (m.vocab_size if k == "vocab_size" else OmegaConf.select(m.cfg, k)), k


@pytest.mark.parametrize("preset", ["bert", "modernbert"])
def test_fill_mask_pipeline_on_export(prepared_data, tmp_path, preset):
    ck, _ = checkpoint(prepared_data, tmp_path, preset)
    out = export_hf(ck, tmp_path / "hf")
    fill = pipeline("fill-mask", model=str(out), tokenizer=str(out))
    res = fill("the [MASK] statement is used to iterate over a sequence")
    assert len(res) == 5 and all("[MASK]" not in r["sequence"] for r in res)


def _hf_dir(tmp_path, model, name="hf"):
    model.save_pretrained(tmp_path / name)
    train_tokenizer(["a b c d e f g"] * 10, vocab_size=100).save(str(tmp_path / name / "tokenizer.json"))
    return tmp_path / name


def _random_hf(preset, **over):
    torch.manual_seed(4)
    common = dict(vocab_size=128, hidden_size=64, num_attention_heads=2, intermediate_size=96)
    if preset == "bert":
        return BertForMaskedLM(BertConfig(num_hidden_layers=2, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0, **common, **over)).eval()
    return ModernBertForMaskedLM(ModernBertConfig(
        num_hidden_layers=4, local_attention=8, global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=2,
        eos_token_id=3, cls_token_id=2, sep_token_id=3, global_rope_theta=5000.0, local_rope_theta=300.0,
        **common, **over)).eval()


@pytest.mark.parametrize("preset", ["bert", "modernbert"])
def test_import_random_hf_model(tmp_path, preset):
    hf = _random_hf(preset)
    with torch.no_grad():  # HF inits norms to 1 and biases to 0: perturb so the mapping is exercised
        for n, p in hf.named_parameters():
            if "norm" in n.lower() or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    ours, _, cfg = import_hf(_hf_dir(tmp_path, hf))
    assert cfg.model.preset == preset
    ids, mask = mixed_batch(128)
    real = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        torch.testing.assert_close(ours.mlm_logits(ours.forward_padded(ids, mask))[real], ref.logits[real], **TOL)
    # a bare encoder directory (BertModel / ModernBertModel) imports too, same hidden states
    enc = _hf_dir(tmp_path, hf.bert if preset == "bert" else hf.model, "enc")
    ours_enc, _, _ = import_hf(enc)
    with torch.no_grad():
        want = (hf.bert if preset == "bert" else hf.model)(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours_enc.forward_padded(ids, mask)[real], want[real], **TOL)


def test_export_blocked_option_writes_nothing(prepared_data, tmp_path):
    from masklab.pretrain.hf.modernbert import export_blockers

    ck, _ = checkpoint(prepared_data, tmp_path, "modernbert")
    # a config the HF class cannot express (head dim 1: no rotary pairs), e.g. from an edited checkpoint
    cfg = OmegaConf.load(ck / "config.yaml")
    cfg.model.num_heads = 64
    OmegaConf.save(cfg, ck / "config.yaml")
    with pytest.raises(CheckpointError, match=r"model.num_heads=64.*even"):
        export_hf(ck, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))
    with pytest.raises(ConfigError, match="head dim 1"):  # our builder refuses it as well
        load_pretrained(ck)
    assert export_blockers(cfg.model) and not export_blockers(OmegaConf.merge(cfg.model, {"num_heads": 2}))


def test_import_bad_inputs(prepared_data, tmp_path):
    from transformers import RobertaConfig, RobertaForMaskedLM

    rob = RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=37))
    with pytest.raises(CheckpointError, match="model_type 'roberta'.*supported are bert, modernbert"):
        import_hf(_hf_dir(tmp_path, rob, "roberta"))
    small = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=37)).save_pretrained(tmp_path / "small")
    tok, _ = load_tokenizer(prepared_data / "tokenizer")  # 2000 ids > 50
    tok.save(str(tmp_path / "small" / "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"tokenizer vocabulary \(2000 ids\) exceeds the model's vocab_size"):
        import_hf(tmp_path / "small")
    untied = _random_hf("modernbert", tie_word_embeddings=False)
    with torch.no_grad():
        untied.decoder.weight.add_(1.0)
    with pytest.raises(CheckpointError, match="not tied"):
        import_hf(_hf_dir(tmp_path, untied, "untied"))
    with pytest.raises(CheckpointError, match="hidden_activation"):
        import_hf(_hf_dir(tmp_path, _random_hf("modernbert", hidden_activation="silu"), "silu"))
    with pytest.raises(CheckpointError, match="no config.json"):
        import_hf(tmp_path)
    del small
