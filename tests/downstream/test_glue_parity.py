"""Parity of the fine-tuning engine's model with transformers' AutoModelForSequenceClassification:
same weights, dropout off, the same head initialisation -> the same first-step loss (rel diff
<= 1e-5) and the same gradient for every parameter tensor (||g_ours - g_hf|| / ||g_hf|| <= 1e-5),
on sentence pairs with token types (our model unpadded, HF padded with an attention mask)."""
import pytest
import torch

PAIRS = [("the cat sat on the mat", "a dog runs"), ("hello", "world and more words here to make it long"),
         ("one two three four", "five"), ("short", "pair")]


def _both(path, num_labels):
    from transformers import AutoModelForSequenceClassification

    from masklab.downstream.finetuning.heads import from_pretrained

    ours, tok, _ = from_pretrained(path, num_labels, seed=0)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, attn_implementation="eager")
    # the same head initialisation: the new (randomly initialised) head weights copied from HF's
    with torch.no_grad():
        ours.classifier.weight.copy_(hf.classifier.weight), ours.classifier.bias.copy_(hf.classifier.bias)
        ours.encoder.pooler.dense.weight.copy_(hf.bert.pooler.dense.weight)
        ours.encoder.pooler.dense.bias.copy_(hf.bert.pooler.dense.bias)
    return ours.eval(), hf.eval(), tok  # eval: dropout off (gradients still flow)


def _hf_batch(data):
    L = int(data.lengths.max())
    ids = torch.zeros(len(data), L, dtype=torch.long)
    tt, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (s, t) in enumerate(zip(data.ids, data.types)):
        ids[i, :len(s)], tt[i, :len(s)], mask[i, :len(s)] = torch.from_numpy(s), torch.from_numpy(t), 1
    return ids, tt, mask


def _grads_ours_naming(hf, num_layers):
    from masklab.pretrain.hf.bert import from_hf_state_dict

    g = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    out = {"encoder." + k: v for k, v in from_hf_state_dict(g, num_layers).items()}
    out["classifier.weight"], out["classifier.bias"] = g["classifier.weight"], g["classifier.bias"]
    return out


@pytest.mark.parametrize("num_labels", [3, 1])
def test_first_step_loss_and_gradients_match_hf(tiny_bert_dir, num_labels):
    _check(tiny_bert_dir, num_labels)


def test_minilm_parity(minilm):
    _check(minilm, 2)


def _check(path, num_labels):
    from masklab.downstream.finetuning.batches import collate, encode

    ours, hf, tok = _both(path, num_labels)
    labels = [0.5, 4.2, 1.0, 3.3] if num_labels == 1 else [0, 1, num_labels - 1, 1]
    data = encode(tok, [a for a, _ in PAIRS], [b for _, b in PAIRS], labels, 128)
    assert any(t.max() == 1 for t in data.types)  # pairs: segment 1 is exercised
    b = collate(data, list(range(len(data))))
    loss = ours.loss(ours(b["input_ids"], b["cu_seqlens"], b["max_seqlen"], b["position_ids"], b["token_type_ids"]),
                     b["labels"])
    ids, tt, mask = _hf_batch(data)
    ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=mask, labels=b["labels"]).loss
    lo, lr = float(loss.detach()), float(ref.detach())
    assert abs(lo - lr) / abs(lr) <= 1e-5, (lo, lr)
    loss.backward(), ref.backward()
    want = _grads_ours_naming(hf, ours.encoder.cfg.num_layers)
    have = {k: p.grad for k, p in ours.named_parameters() if p.requires_grad}
    assert set(have) == set(want), set(have) ^ set(want)
    for k, g in have.items():
        rel = float((g - want[k]).norm() / want[k].norm().clamp(min=1e-30))
        assert rel <= 1e-5, (k, rel)


def test_modernbert_head_parity(tiny_bert_dir, tmp_path):
    """ModernBERT: h[CLS] after the final norm -> its prediction head (the MLM checkpoint's head.dense /
    head.norm) -> linear, as ModernBertForSequenceClassification (classifier_pooling='cls')."""
    import shutil

    from transformers import AutoModelForSequenceClassification, ModernBertConfig, ModernBertForMaskedLM

    from masklab.downstream.finetuning.batches import collate, encode
    from masklab.downstream.finetuning.heads import from_pretrained
    from masklab.pretrain.hf.modernbert import _LAYER

    torch.manual_seed(4)
    hf_mlm = ModernBertForMaskedLM(ModernBertConfig(
        vocab_size=128, hidden_size=64, num_attention_heads=2, intermediate_size=96, num_hidden_layers=4,
        local_attention=8, global_attn_every_n_layers=3, pad_token_id=0, bos_token_id=2, eos_token_id=3,
        cls_token_id=2, sep_token_id=3, global_rope_theta=5000.0, local_rope_theta=300.0, classifier_pooling="cls"))
    with torch.no_grad():  # norms at 1 would hide a missing head norm
        for n, p in hf_mlm.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    d = tmp_path / "mb"
    hf_mlm.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_bert_dir / f).is_file():
            shutil.copy(tiny_bert_dir / f, d / f)
    ours, tok, _ = from_pretrained(d, 3, seed=0)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(d, num_labels=3, attn_implementation="eager")
    with torch.no_grad():
        ours.classifier.weight.copy_(hf.classifier.weight), ours.classifier.bias.copy_(hf.classifier.bias)
    ours.eval(), hf.eval()
    data = encode(tok, [a for a, _ in PAIRS], [b for _, b in PAIRS], [0, 1, 2, 1], 128)
    b = collate(data, list(range(len(data))))
    loss = ours.loss(ours(b["input_ids"], b["cu_seqlens"], b["max_seqlen"], b["position_ids"]), b["labels"])
    ids, _, mask = _hf_batch(data)
    ref = hf(input_ids=ids, attention_mask=mask, labels=b["labels"]).loss
    lo, lr = float(loss.detach()), float(ref.detach())
    assert abs(lo - lr) / abs(lr) <= 1e-5, (lo, lr)
    loss.backward(), ref.backward()
    g = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    names = {"encoder.embeddings.tok_embeddings.weight": "model.embeddings.tok_embeddings.weight",
             "encoder.embeddings.norm.weight": "model.embeddings.norm.weight",
             "encoder.final_norm.weight": "model.final_norm.weight", "pool.dense.weight": "head.dense.weight",
             "pool.norm.weight": "head.norm.weight", "classifier.weight": "classifier.weight",
             "classifier.bias": "classifier.bias"}
    for i in range(4):
        for o, h in _LAYER.items():
            names[f"encoder.layers.{i}.{o}"] = f"model.layers.{i}.{h}"
    have = {k: p.grad for k, p in ours.named_parameters() if p.requires_grad}
    assert set(have) <= set(names) and len(have) == len(g), (set(have) - set(names), len(have), len(g))
    for k, gr in have.items():
        rel = float((gr - g[names[k]]).norm() / g[names[k]].norm().clamp(min=1e-30))
        assert rel <= 1e-5, (k, rel)
