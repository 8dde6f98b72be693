"""Hold-out splits of labelled rows: stratified by label, optionally grouped (all rows sharing a
group value, e.g. a source or template id, stay on one side so near-duplicates cannot leak)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from masklab.errors import DataError


def split_indices(y: np.ndarray, fraction: float, seed: int,
                  groups: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (keep, held_out) sorted index arrays. Ungrouped: held_out gets round(fraction * n_c)
    rows of each class c (at least 1 when fraction > 0). Grouped: one fold of a stratified
    group k-fold with k = round(1 / fraction), so about `fraction` of the rows."""
    y = np.asarray(y)
    if fraction <= 0:
        return np.arange(len(y)), np.zeros(0, dtype=np.int64)
    if groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        k = max(2, int(round(1 / fraction)))
        if len(set(groups.tolist())) < k:
            raise DataError(f"{len(set(groups.tolist()))} groups are too few to hold out {fraction:.0%} by group")
        keep, held = next(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))
        return np.sort(keep), np.sort(held)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, int(round(fraction * len(idx))))
        held += idx[:k].tolist()
        keep += idx[k:].tolist()
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def group_values(columns: dict, column: Optional[str], source: str) -> Optional[np.ndarray]:
    """The values of `column` (a LabelledData.columns entry) as strings, or None without a column."""
    if column is None:
        return None
    if column not in columns:
        raise DataError(f"{source}: no column '{column}' for --group-column; columns found: "
                        f"{', '.join(columns) or 'none'}")
    return np.asarray([str(v) for v in columns[column]])
