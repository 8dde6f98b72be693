"""Classifiers on embeddings, the TF-IDF baseline, calibration and the saved bundle."""
