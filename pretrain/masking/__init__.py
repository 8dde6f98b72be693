"""Masking: Segmenter -> Selector -> Corruptor (per sample) -> Emitter (the collator); schedules."""
from masklab.errors import ConfigError
from pretrain.masking.masker import EVAL_STREAM, MaskedSample, Masker, sample_rng
from pretrain.masking.schedule import masking_rate

WORD_UNITS = ("whole_word", "pmi", "span")


def build_masker(cfg, tok, shards_manifest=None):
    """The masker for `cfg` (masking section); checks at start-up what the strategy needs."""
    if cfg.unit in WORD_UNITS and shards_manifest is not None and not shards_manifest.get("word_starts", False):
        raise ConfigError(f"masking.unit={cfg.unit} needs word boundaries, but these shards have none "
                          "(re-run `masklab prep`)")
    pmi = None
    if cfg.unit == "pmi":
        if not cfg.pmi_table:
            raise ConfigError("masking.unit=pmi needs masking.pmi_table (build one with `masklab pmi`)")
        from data_prep.pmi import load_pmi_table

        pmi = load_pmi_table(cfg.pmi_table, tok.sha256)
    return Masker(cfg, tok, pmi)


__all__ = ["Masker", "MaskedSample", "sample_rng", "masking_rate", "build_masker", "EVAL_STREAM"]
