"""Masking: Segmenter (segment.py) -> Selector (select.py) -> Corruptor (corrupt.py), run over a
whole batch by the Masker (masker.py); the collator (pretrain.data) is the Emitter. Rate
schedules in schedule.py, counter-based randomness in rng.py."""
from typing import Optional

from masklab.errors import ConfigError
from masklab.pretrain.masking.masker import EVAL_STREAM, MaskedBatch, MaskedSample, Masker, sample_rng
from masklab.pretrain.masking.schedule import masking_rate

WORD_UNITS = ("whole_word", "pmi", "span")

# Bumped whenever the same (config, seed, step) starts to give different masks, so that a resume
# across such a change is refused instead of silently continuing with other masks.
# 1: per-sample masking (until 2026-11-22); 2: batch-vectorised hash RNG (rng.py).
MASKING_ALGORITHM = 2
# Settings that decide training masks (file paths and eval_rate do not: tables are hash-checked).
MASK_KEYS = ("rate", "schedule", "rate_end", "schedule_steps", "step_at", "unit", "selector", "mask_prob",
             "random_prob", "keep_prob", "corrupt_per_unit", "span_p", "span_max", "insertion", "insert_layer")


def build_masker(cfg, tok, shards_manifest: Optional[dict] = None) -> Masker:
    """The masker for `cfg` (the masking section, already validated by masklab.config: rates,
    insertion layer). What needs the data is checked here, at start-up, with a clear
    ConfigError: word boundaries in the shards, a PMI table / weight table made with this tokenizer."""
    if cfg.unit in WORD_UNITS and shards_manifest is not None and not shards_manifest.get("word_starts", False):
        raise ConfigError(f"masking.unit={cfg.unit} needs word boundaries, but these shards have none "
                          "(manifest word_starts is false; re-run `masklab prep`)")
    pmi = None
    if cfg.unit == "pmi":
        if not cfg.pmi_table:
            raise ConfigError("masking.unit=pmi needs masking.pmi_table (build one with `masklab pmi`)")
        from masklab.data_prep.pmi import load_pmi_table

        pmi = load_pmi_table(cfg.pmi_table, tok.sha256, tok.vocab_size)
    weights = None
    if cfg.informask_weights:
        if cfg.selector != "budget":
            raise ConfigError("masking.informask_weights needs masking.selector=budget")
        from masklab.data_prep.weights import load_token_weights

        weights = load_token_weights(cfg.informask_weights, tok.sha256, tok.vocab_size)
    return Masker(cfg, tok, pmi, weights)


__all__ = ["Masker", "MaskedSample", "MaskedBatch", "sample_rng", "masking_rate", "build_masker", "EVAL_STREAM",
           "MASKING_ALGORITHM", "MASK_KEYS"]
