"""Fine-tuned models saved before the shared engine, served by today's code.

Until the engine (December 2026), `masklab finetune` saved out/model/ as a transformers directory:
- pooling `cls`: a BertForSequenceClassification / ModernBertForSequenceClassification directory
  (encoder + pooler or head + `classifier.*`);
- pooling `mean`: the encoder's AutoModel directory plus `head.safetensors` (the linear layer).
Both hold exactly the weights of today's `heads.SequenceClassifier`, so they are imported into it
(`pretrain.hf.convert.import_hf_model`, the same checks as any HF source) instead of being refused:
a security team's deployed detectors keep serving after an upgrade, with the same scores.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from masklab.errors import CheckpointError

log = logging.getLogger("masklab.downstream")
# what the import reads besides the weights (a directory may also hold large or foreign files)
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def load_legacy(p: Path, pooling: str):
    """p: a pre-engine out/model directory (no model.yaml) -> (SequenceClassifier in eval mode,
    tokenizers.Tokenizer). The directory is only read; the import works on a filtered copy."""
    from safetensors.torch import load_file, save_file

    from masklab.downstream.finetuning.heads import SequenceClassifier
    from masklab.downstream.finetuning.model import import_quietly

    weights = sorted(f for f in p.glob("*.safetensors") if f.name != "head.safetensors")
    state = {}
    for f in weights:
        state.update(load_file(str(f)))
    head = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
    if pooling == "mean":
        if not (p / "head.safetensors").is_file():
            raise CheckpointError(f"{p}: a mean-pooling fine-tuned model of the older layout needs head.safetensors")
        head = load_file(str(p / "head.safetensors"))
    if set(head) != {"weight", "bias"}:
        raise CheckpointError(f"{p}: no 2-way classifier weights found (classifier.weight / classifier.bias)")
    with tempfile.TemporaryDirectory(prefix="masklab_legacy_") as tmp:
        for name in COPIED:  # weights are rewritten below without the classifier; nothing else is read
            if (p / name).is_file():
                shutil.copy(p / name, tmp)
        save_file({k: v for k, v in state.items() if not k.startswith("classifier.")},
                  str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        imp = import_quietly(tmp)
    model = SequenceClassifier(imp.model, 2, None, pooling)
    if pooling == "cls" and model.preset == "bert" and not imp.cfg.model.pooler:
        raise CheckpointError(f"{p}: a cls-pooling BERT classifier without pooler weights")
    model.classifier.load_state_dict(head)
    log.info("%s: a fine-tuned model of the older transformers layout, imported (pooling %s)", p, pooling)
    return model.eval(), imp.tokenizer
