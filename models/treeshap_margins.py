"""The numba kernel of :func:`models.treeshap.margins`: raw scores without tree walks.

Compiled on first use and cached on disk, like :mod:`models.treeshap_kernels`, whose
split decisions it repeats (LightGBM's ``Tree::Decision``). Repeats, not imports: numba
invalidates a cached kernel when its own file changes, not when a jitted function or
constant it took from another module does, so a kernel here uses only this file's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

from models.treeshap_kernels import split

#: LightGBM's kZeroThreshold (a float), as in :mod:`models.treeshap_kernels`.
ZERO = float(np.float32(1e-35))
INT_LIMIT = 2147483648.0

#: Rows whose scores are summed together in :func:`_margins` (their columns stay in cache).
_MARGIN_ROWS = 256
#: Finds the lowest set bit of a 32-bit mask (de Bruijn multiplication).
_DE_BRUIJN = np.array([0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8, 31, 27, 13, 23,
                       21, 19, 16, 7, 26, 12, 18, 6, 11, 5, 10, 9], dtype=np.int64)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _margins(
    xt,
    splits,
    node_start,
    leaf_start,
    feature,
    threshold,
    mode,
    nan_left,
    zero_left,
    cat_start,
    cat_words,
    cat_bits,
    keep,
    leaf_order,
    leaf_value,
    de_bruijn,
    out,
    lo,
    hi,
):  # noqa: ANN001, ANN202
    """Each row's (of ``lo:hi``) raw score: its leaves' values summed tree by tree.

    ``xt`` is the input by feature (``features x rows``): a split reads its feature's
    values of :data:`_MARGIN_ROWS` consecutive rows, one contiguous stretch.

    LightGBM's ``PredictRaw`` for one tree per iteration: from 0.0, in tree order, the
    value of the leaf each tree's ``Decision`` (as in ``treeshap_kernels._patterns``) leads to, so
    each sum has LightGBM's bits. The leaf is found without walking the tree
    (QuickScorer, Lucchese et al., SIGIR 2015): every split the row does not go left at
    clears the leaves of its left subtree from a mask of the tree's leaves in
    left-to-right order (``keep``); the row's leaf is the leftmost one left. Splits are
    evaluated a column at a time over :data:`_MARGIN_ROWS` rows, without branches.
    """
    rows = _MARGIN_ROWS
    mask = np.empty(rows, dtype=np.uint32)
    total = np.empty(rows, dtype=np.float64)
    every = np.uint32(0xFFFFFFFF)
    for first in range(lo, hi, rows):
        n = min(first + rows, hi) - first
        for j in range(n):
            total[j] = 0.0
        for t in range(splits.shape[0]):
            for j in range(n):
                mask[j] = every
            for i in range(splits[t]):
                g = node_start[t] + i
                column, k = xt[feature[g], first : first + n], keep[g]
                if mode[g] == 2:  # categorical: NaN, negative, out-of-int values go right
                    start, words = cat_start[g], cat_words[g]
                    for j in range(n):
                        value = column[j]
                        valid = (value > -INT_LIMIT - 1.0) & (value < INT_LIMIT)
                        code = int(value) if valid else -1
                        word = code >> 5
                        inside = (code >= 0) & (word < words)
                        bits = cat_bits[start + word if inside else 0]
                        go = inside & ((bits >> (code & 31)) & 1 == 1)
                        mask[j] &= k | (np.uint32(0) - np.uint32(go))
                    continue
                limit, nan = threshold[g], nan_left[g]
                if mode[g] == 0:
                    for j in range(n):
                        value = column[j]
                        go = (value <= limit) | (nan & (value != value))
                        mask[j] &= k | (np.uint32(0) - np.uint32(go))
                    continue
                zero_side = zero_left[g]
                for j in range(n):
                    value = column[j]
                    zero = (value >= -ZERO) & (value <= ZERO)
                    side = zero_side if zero else value <= limit  # a select, not a branch
                    go = (nan & (value != value)) | side
                    mask[j] &= k | (np.uint32(0) - np.uint32(go))
            leaves = leaf_start[t]
            for j in range(n):
                m = mask[j]
                lowest = m & (~m + np.uint32(1))
                position = de_bruijn[np.uint32(lowest * np.uint32(0x077CB531)) >> np.uint32(27)]
                total[j] += leaf_value[leaves + leaf_order[leaves + position]]
        for j in range(n):
            out[first + j] = total[j]


def margins(trees: Any, x: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
    """Fill ``out`` (``rows``) with the raw scores of ``x``'s rows.

    ``x`` is ``rows x features``; laid out by feature (Fortran order, as
    :meth:`models.model.ModelInput.rows` makes it) it is read without a copy.
    ``threads`` Python threads share the rows (the kernel releases the GIL).
    """
    xt = np.ascontiguousarray(x.T)  # features x rows: no copy of a Fortran-ordered x
    parts = split(len(x), 4 * threads) if threads > 1 else [(0, len(x))]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        futures = [pool.submit(_margins, xt, trees.splits, trees.node_start, trees.leaf_start,
                               trees.feature, trees.threshold, trees.mode, trees.nan_left,
                               trees.zero_left, trees.cat_start, trees.cat_words, trees.cat_bits,
                               trees.keep, trees.leaf_order, trees.leaf_value, _DE_BRUIJN, out,
                               lo, hi)
                   for lo, hi in parts]  # fmt: skip
        for future in futures:
            future.result()
