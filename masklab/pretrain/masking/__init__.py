"""Masking: Segmenter (segment.py) -> Selector (select.py) -> Corruptor (corrupt.py), run over a
whole batch by the Masker (masker.py); the collator (pretrain.data) is the Emitter. Rate
schedules in schedule.py, counter-based randomness in rng.py."""
from pathlib import Path
from typing import Optional

from masklab.errors import ConfigError
from masklab.pretrain.masking.masker import EVAL_STREAM, MaskedBatch, MaskedSample, Masker, sample_rng
from masklab.pretrain.masking.schedule import masking_rate

WORD_UNITS = ("whole_word", "pmi", "span")

# Bumped whenever the same (config, seed, step) starts to give different masks, so that a resume
# across such a change is refused instead of silently continuing with other masks.
# 1: per-sample masking (until 2026-11-22); 2: batch-vectorised hash RNG (rng.py); 3: PMI word hashes
# depend on every token (v3 tables), SpanBERT's truncated geometric span law, InforMask PMI scores.
MASKING_ALGORITHM = 3
# Settings that decide training masks (file paths and eval_rate do not: tables are hash-checked); the
# schedule length (schedule_steps or train.max_steps) is recorded by masking_compat.
MASK_KEYS = ("rate", "schedule", "rate_end", "step_at", "unit", "selector", "mask_prob",
             "random_prob", "keep_prob", "corrupt_per_unit", "span_p", "span_max", "span_law", "informask_score",
             "insertion", "insert_layer")


def masking_compat(cfg) -> dict:
    """What a resumed run's masking must share with its checkpoint (recorded in state.json): the
    algorithm, every MASK_KEYS setting, and the effective schedule length (schedule_steps, or
    train.max_steps when 0), which decides linear / cosine / step rates (0 for a constant rate, so
    extending max_steps stays allowed there)."""
    m = cfg.masking
    out = {"masking.algorithm": MASKING_ALGORITHM}
    out.update({f"masking.{k}": getattr(m, k) for k in MASK_KEYS})
    if m.informask_weights:  # the table's format decides its rates (v3: unbiased best-of-N search)
        from masklab.data_prep.weights import FORMAT

        out["masking.informask_table"] = FORMAT
    out["masking.schedule_length"] = 0 if m.schedule == "constant" else int(m.schedule_steps or cfg.train.max_steps)
    return out


def resolve_table(key: str, path: str) -> str:
    """A table path of a config (recipes carry relative ones such as runs/pmi) is resolved against
    the working directory, never the config file's directory. -> the absolute path."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise ConfigError(f"masking.{key}={path}: no such directory {p} (relative paths are resolved against the "
                          f"working directory {Path.cwd()})")
    return str(p)


def build_masker(cfg, tok, shards_manifest: Optional[dict] = None) -> Masker:
    """The masker for `cfg` (the masking section, already validated by masklab.config_validation: rates,
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

        pmi = load_pmi_table(resolve_table("pmi_table", cfg.pmi_table), tok.sha256, tok.vocab_size)
    weights = None
    if cfg.informask_weights:
        from masklab.data_prep.weights import load_token_weights

        path = resolve_table("informask_weights", cfg.informask_weights)
        weights = load_token_weights(path, cfg.informask_score, tok.sha256, tok.vocab_size)
    return Masker(cfg, tok, pmi, weights)


__all__ = ["Masker", "MaskedSample", "MaskedBatch", "sample_rng", "masking_rate", "build_masker", "EVAL_STREAM",
           "MASKING_ALGORITHM", "MASK_KEYS", "masking_compat"]
