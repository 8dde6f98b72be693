"""Labelled data for detection: loading, hold-out splits, document carriers."""
