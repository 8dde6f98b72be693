"""Evaluation of a checkpoint: held-out MLM loss and accuracy, pseudo-log-likelihood."""
