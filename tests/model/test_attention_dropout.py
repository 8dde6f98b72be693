"""model.attention_dropout (issue 31 item 11): no kernel applies it, so a value > 0 is refused with the key
and the fix, and an HF config's non-zero value (BERT's default 0.1) becomes 0 with a log line."""
import logging

import pytest
from transformers import BertConfig, ModernBertConfig

from masklab.config import load_config
from masklab.config_schema import ModelConfig
from masklab.errors import ConfigError
from masklab.pretrain.hf.bert import model_cfg_from_hf
from masklab.pretrain.hf.modernbert import model_cfg_from_hf as modernbert_cfg_from_hf


def test_attention_dropout_above_zero_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"model.attention_dropout=0.1 is not supported.*set model.attention_dropout=0"):
        load_config("configs/smoke_cpu.yaml", ["model.attention_dropout=0.1"])
    assert load_config("configs/smoke_cpu.yaml", ["model.attention_dropout=0"]).model.attention_dropout == 0


def test_hf_bert_config_with_0_1_imports_as_0_and_says_so(caplog):
    base = ModelConfig()
    hf = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    attention_probs_dropout_prob=0.1)
    with caplog.at_level(logging.WARNING, logger="masklab.hf"):
        model_cfg_from_hf(hf, base)
    assert base.attention_dropout == 0.0
    assert "attention_probs_dropout_prob=0.1 becomes model.attention_dropout=0" in caplog.text


def test_hf_modernbert_config_with_dropout_imports_as_0(caplog):
    base = ModelConfig()
    hf = ModernBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=64, attention_dropout=0.1, global_attn_every_n_layers=3)
    with caplog.at_level(logging.WARNING, logger="masklab.hf"):
        modernbert_cfg_from_hf(hf, base)
    assert base.attention_dropout == 0.0 and "attention_dropout=0.1 becomes model.attention_dropout=0" in caplog.text
