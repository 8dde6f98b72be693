
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from masklab.data_prep.tokenizer import TokenizerInfo
from masklab.config import load_config
from masklab.pretrain.hf.bert import from_hf_state_dict, hf_config, to_hf_state_dict
from masklab.pretrain.model import build_model, padded_vocab_size
from tests.model.padded_parity import assert_padded_matches_unpadded

TOK = TokenizerInfo(vocab_size=100, pad_id=0, cls_id=2, sep_id=3, mask_id=4, unk_id=1, special_ids=(0, 1, 2, 3, 4), sha256="x")


def _model(**ov):
    cfg = load_config(None, ["data.shards=x", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4",
                             "model.intermediate_size=96", "model.hidden_dropout=0"] + [f"{k}={v}" for k, v in ov.items()])
    torch.manual_seed(0)
    return build_model(cfg.model, TOK).eval(), cfg


def _mixed_batch(B=4, L=23, V=100):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (B, L), generator=g)
    lens = torch.tensor([L, 1, 7, 16])[:B]
    mask = (torch.arange(L)[None] < lens[:, None]).long()
    return ids * mask, mask


def test_vocab_is_padded_to_multiple_of_64():
    m, _ = _model()
    assert m.vocab_size == 128 == padded_vocab_size(100, 64)


def test_padded_and_unpadded_paths_agree():
    m, _ = _model()
    assert_padded_matches_unpadded(m, *_mixed_batch())


def test_matches_transformers_bert_both_ways():
    m, cfg = _model()
    hf = BertForMaskedLM(hf_config(cfg.model, m.vocab_size)).eval()
    hf.load_state_dict(to_hf_state_dict(m.state_dict(), cfg.model.num_layers), strict=False)
    hf.tie_weights()
    ids, mask = _mixed_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        ours = m.mlm_logits(m.forward_padded(ids, mask))
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=2e-5, rtol=1e-5)
    # and back: a random HF BertConfig model imported into ours
    torch.manual_seed(3)
    hf2 = BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=96, hidden_dropout_prob=0, attention_probs_dropout_prob=0)).eval()
    m2, _ = _model()
    missing, unexpected = m2.load_state_dict(from_hf_state_dict(hf2.state_dict(), 2), strict=False)
    assert not missing and not unexpected
    with torch.no_grad():
        torch.testing.assert_close(m2.mlm_logits(m2.forward_padded(ids, mask))[real],
                                   hf2(input_ids=ids, attention_mask=mask).logits[real], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("sparse", ["head", "last_layer", "none"])
def test_sparse_prediction_modes_give_the_same_loss(prepared_data, sparse):
    import numpy as np

    from masklab.data_prep import ShardSet
    from masklab.pretrain.data.collator import Collator

    cfg = load_config("configs/smoke_cpu.yaml", [f"data.shards={prepared_data}", "data.seq_len=64",
                                                 "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
                                                 "model.intermediate_size=128"])
    shards = ShardSet(prepared_data)
    b = Collator(cfg, shards)(np.arange(8), 0)
    torch.manual_seed(0)
    ref = build_model(cfg.model, shards.tokenizer).eval()
    cfg.model.sparse_prediction = sparse
    m = build_model(cfg.model, shards.tokenizer).eval()
    m.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(b)["loss_sum"], ref(b)["loss_sum"], atol=1e-3, rtol=1e-5)
