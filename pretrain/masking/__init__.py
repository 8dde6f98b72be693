"""Masking: units (segmenter) -> selection (budget / Bernoulli) -> corruption; rate schedules."""
from pretrain.masking.masker import EVAL_STREAM, MaskedSample, Masker, sample_rng
from pretrain.masking.schedule import masking_rate


def build_masker(cfg, tok):
    """The masker for `cfg.masking` (the single construction point the collator uses)."""
    return Masker(cfg, tok)


__all__ = ["Masker", "MaskedSample", "sample_rng", "masking_rate", "build_masker", "EVAL_STREAM"]
