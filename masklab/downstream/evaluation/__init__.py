"""Detection metrics, cross-source evaluation and the report."""
