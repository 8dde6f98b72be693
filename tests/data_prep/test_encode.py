"""The batch encoder equals the per-document reference (ids and word starts) for every tokenizer kind."""
import numpy as np
import pytest

from masklab.data_prep.encode import encode_documents
from masklab.data_prep.tokenizer import train_tokenizer
from masklab.data_prep.words import word_starts


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_batch_word_starts_equal_the_per_document_reference(docs, kind):
    texts = docs[:300] + ["", "x", "don't stop-me now"]
    tok = train_tokenizer(iter(docs[:800]), vocab_size=600, kind=kind)
    enc = encode_documents(tok, texts, fraction=0.2, seed=1)
    ref = tok.encode_batch(texts, add_special_tokens=False)
    assert enc.lengths.tolist() == [len(e.ids) for e in ref]
    assert enc.ids.tolist() == [i for e in ref for i in e.ids]
    want = np.concatenate([word_starts(e.word_ids, e.offsets, t) for e, t in zip(ref, texts)])
    assert np.array_equal(enc.starts, want)
    assert 0 < enc.validation.sum() < len(texts)
