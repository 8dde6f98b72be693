"""Training input: the collator, the sample index, its permutation, packing and step budgets."""
