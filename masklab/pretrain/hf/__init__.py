"""Hugging Face mapping: export / import per preset, pretrained loading, continued pretraining."""
