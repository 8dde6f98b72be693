"""Baseline without any neural encoder: character n-gram TF-IDF + logistic regression.

Features come straight from raw text (X: object array of N strings), so this plugs into
`classifiers.cross_validate` and `save_bundle(encoder_spec={"kind": "text"})` unchanged.
"""
from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


def make_tfidf_lr(seed: int = 0, ngram_range: tuple[int, int] = (2, 5), C: float = 10.0) -> Pipeline:
    # char_wb n-grams survive obfuscation (spacing, casing, leetspeak) better than word tokens;
    # sublinear tf keeps long tool outputs from dominating
    return Pipeline([
        ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=True, sublinear_tf=True,
                                  min_df=1, max_features=200_000)),
        ("clf", LogisticRegression(C=C, max_iter=5000, random_state=seed)),
    ])
