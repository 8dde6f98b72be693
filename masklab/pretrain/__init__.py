"""Pretraining: the batch contract, model presets, masking, training loop, checkpoints, HF I/O."""
from masklab.pretrain.batch import UnpaddedBatch
from masklab.pretrain.hf.convert import export_hf, import_hf, load_pretrained, resolve_checkpoint
from masklab.pretrain.model import build_model

__all__ = ["UnpaddedBatch", "build_model", "load_pretrained", "export_hf", "import_hf", "resolve_checkpoint", "train"]


def train(cfg):
    """Run training for a loaded config (lazy import: the loop pulls in tqdm/tensorboard)."""
    from masklab.pretrain.loop.train import train as _train

    return _train(cfg)
