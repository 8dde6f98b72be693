"""Downstream use of encoders for detection: embeddings, classifiers, fine-tuning, reports.

Public surface (what other packages and scripts may use):
- data:        load_labelled, load_bastion, LabelledData
- encoders:    load_encoder, detect_kind (Encoder: encoder_base)
- classifiers: make_classifier, cross_validate, stratified_folds, Settings, NAMES
- bundle:      save_bundle, load_bundle (fixed schema, no code from files)
- crosssource: evaluate, load_split (train once, choose on validation, score test sets)
- predict:     predict, load_model, ROW_FIELDS (one output schema: bundles, fine-tuned models, ensembles)
- ensemble:    build_ensemble, load_ensemble (rank average / cross-fitted stack; plain JSON)
- metrics:     binary_metrics, bootstrap_ci; operating: choose, fpr_upper_bound (thresholds with evidence)
- pipeline:    embed, load_embeddings, classify, detect_smoke
- finetune:    finetune, finetune_cv (FinetuneConfig, load_finetuned: finetuning.model; on the engine of finetuning.engine)
- carriers:    carried, CarrierSpec, carrier_paragraphs (prompts placed inside benign documents)
- report:      write_report
Heavy imports (torch, transformers, sklearn) happen when a function is first used.
"""
from __future__ import annotations

from masklab.lazy import lazy_exports

_EXPORTS = {
    "load_labelled": "data.labelled", "load_bastion": "data.labelled", "LabelledData": "data.labelled",
    "load_encoder": "encoders.load", "detect_kind": "encoders.load", "Encoder": "encoders.base",
    "make_classifier": "classifiers.models", "cross_validate": "classifiers.models", "stratified_folds": "classifiers.models",
    "Settings": "classifiers.models", "NAMES": "classifiers.models", "save_bundle": "classifiers.bundle", "load_bundle": "classifiers.bundle",
    "evaluate": "evaluation.crosssource", "load_split": "evaluation.crosssource", "predict": "predict", "load_model": "predict",
    "ROW_FIELDS": "predict", "build_ensemble": "ensemble", "load_ensemble": "ensemble",
    "choose": "evaluation.operating", "fpr_upper_bound": "evaluation.operating",
    "binary_metrics": "evaluation.metrics", "bootstrap_ci": "evaluation.metrics",
    "embed": "pipeline", "load_embeddings": "pipeline", "classify": "pipeline", "detect_smoke": "pipeline",
    "finetune": "finetuning.run", "finetune_cv": "finetuning.run", "FinetuneConfig": "finetuning.model", "load_finetuned": "finetuning.model",
    "write_report": "evaluation.report", "carried": "data.carriers", "CarrierSpec": "data.carriers", "carrier_paragraphs": "data.carriers",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
