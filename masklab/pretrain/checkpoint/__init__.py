"""Checkpoints: the atomic, pickle-free store, its signed integrity sums, the run lock."""
