"""Numba kernels of :mod:`models.treeshap` (compiled on first use, cached on disk).

The arithmetic of the path functions is LightGBM's (``Tree::ExtendPath``,
``UnwindPath``, ``UnwoundPathSum`` and ``TreeSHAP`` in ``src/io/tree.cpp``), operation
for operation and in the same order; no ``fastmath`` (it would reorder them).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

#: LightGBM's kZeroThreshold (a float).
ZERO = float(np.float32(1e-35))
INT_LIMIT = 2147483648.0
#: Rows replayed together (their columns of one tree stay in cache).
_BLOCK = 512


@numba.njit(cache=True, nogil=True)
def _patterns(
    xt,
    splits,
    node_start,
    feature,
    threshold,
    mode,
    nan_left,
    zero_left,
    cat_start,
    cat_words,
    cat_bits,
    keys,
    lo,
    hi,
):  # noqa: ANN001, ANN202
    """Per tree and row (of ``lo:hi``), one bit per split: set when the row goes left there.

    ``xt`` is the input by column. LightGBM's ``Tree::Decision`` of the value as its
    predictor hands it over (``|x| <= kZeroThreshold`` is 0), with each split's NaN and
    zero sides worked out beforehand (:func:`models.treeshap.forest`); one split at a
    time over the rows, without branches (as :func:`models.treeshap_margins._margins`).
    """
    for t in range(splits.shape[0]):
        row = keys[t]
        for r in range(lo, hi):
            row[r] = 0
        for i in range(splits[t]):
            node = node_start[t] + i
            column = xt[feature[node]]
            bit = np.uint16(1 << i)
            limit, nan = threshold[node], nan_left[node]
            if mode[node] == 0:  # the common case: one comparison, no branch
                for r in range(lo, hi):
                    value = column[r]
                    go = (value <= limit) | (nan & (value != value))
                    row[r] |= bit * np.uint16(go)
                continue
            if mode[node] == 2:  # categorical: NaN, negative, out-of-int values go right
                start, words = cat_start[node], cat_words[node]
                for r in range(lo, hi):
                    value = column[r]
                    valid = (value > -INT_LIMIT - 1.0) & (value < INT_LIMIT)
                    code = int(value) if valid else -1
                    word = code >> 5
                    inside = (code >= 0) & (word < words)
                    bits = cat_bits[start + word if inside else 0]
                    go = inside & ((bits >> (code & 31)) & 1 == 1)
                    row[r] |= bit * np.uint16(go)
                continue
            zero_side = zero_left[node]
            for r in range(lo, hi):
                value = column[r]
                zero = (value >= -ZERO) & (value <= ZERO)
                side = zero_side if zero else value <= limit  # a select, not a branch
                go = (nan & (value != value)) | side
                row[r] |= bit * np.uint16(go)


@numba.njit(cache=True, nogil=True)
def _slots(keys, splits, distinct_start, distinct, n_distinct, lo, hi):  # noqa: ANN001, ANN202
    """Per tree (of ``lo:hi``), number its patterns in order of appearance; keys become numbers."""
    for t in range(lo, hi):
        if splits[t] == 0:
            n_distinct[t] = 0
            continue
        table = np.full(1 << splits[t], -1, dtype=np.int64)
        count = 0
        for r in range(keys.shape[1]):
            key = keys[t, r]
            slot = table[key]
            if slot < 0:
                slot = count
                table[key] = slot
                distinct[distinct_start[t] + slot] = key
                count += 1
            keys[t, r] = slot
        n_distinct[t] = count


@numba.njit(cache=True, nogil=True)
def _extend(pf, pz, po, pw, off, depth, zero, one, feat):  # noqa: ANN001, ANN202
    pf[off + depth] = feat
    pz[off + depth] = zero
    po[off + depth] = one
    pw[off + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        pw[off + i + 1] += one * pw[off + i] * (i + 1) / (depth + 1)
        pw[off + i] = zero * pw[off + i] * (depth - i) / (depth + 1)


@numba.njit(cache=True, nogil=True)
def _unwind(pf, pz, po, pw, off, depth, index):  # noqa: ANN001, ANN202
    one = po[off + index]
    zero = pz[off + index]
    next_one = pw[off + depth]
    for i in range(depth - 1, -1, -1):
        if one != 0:
            tmp = pw[off + i]
            pw[off + i] = next_one * (depth + 1) / ((i + 1) * one)
            next_one = tmp - pw[off + i] * zero * (depth - i) / (depth + 1)
        else:
            pw[off + i] = (pw[off + i] * (depth + 1)) / (zero * (depth - i))
    for i in range(index, depth):
        pf[off + i] = pf[off + i + 1]
        pz[off + i] = pz[off + i + 1]
        po[off + i] = po[off + i + 1]


@numba.njit(cache=True, nogil=True)
def _unwound_sum(pz, po, pw, off, depth, index):  # noqa: ANN001, ANN202
    one = po[off + index]
    zero = pz[off + index]
    next_one = pw[off + depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one != 0:
            tmp = next_one * (depth + 1) / ((i + 1) * one)
            total += tmp
            next_one = pw[off + i] - tmp * zero * ((depth - i) / (depth + 1))
        else:
            total += (pw[off + i] / zero) / ((depth - i) / (depth + 1))
    return total


@numba.njit(cache=True, nogil=True)
def _count(node, start, leaf_start, count, leaf_count):  # noqa: ANN001, ANN202
    return count[start + node] if node >= 0 else leaf_count[leaf_start + ~node]


@numba.njit(cache=True, nogil=True)
def _terms(
    splits,
    node_start,
    leaf_start,
    feature,
    left,
    right,
    count,
    leaf_value,
    leaf_count,
    max_depth,
    terms,
    tree_features,
    feature_start,
    n_features,
    distinct_start,
    distinct,
    n_distinct,
    term_start,
    term_value,
    lo,
    hi,
):  # noqa: ANN001, ANN202
    """Per tree (of ``lo:hi``) and pattern, what LightGBM's TreeSHAP adds to each feature.

    LightGBM's additions in its order, each feature's summed from 0.0 into
    ``term_value`` (zeroed): one value per (tree, pattern, feature of the tree).
    """
    size = (max_depth + 3) * (max_depth + 4) // 2
    local = np.full(n_features, -1, dtype=np.int64)  # feature -> its place in the tree's list
    for t in range(lo, hi):
        if splits[t] == 0:
            continue
        for j in range(terms[t]):
            local[tree_features[feature_start[t] + j]] = j
        start, leaves = node_start[t], leaf_start[t]
        pf = np.empty(size, dtype=np.int64)
        pz, po, pw = np.empty(size), np.empty(size), np.empty(size)
        s_node = np.empty(2 * max_depth + 4, dtype=np.int64)
        s_depth = np.empty(2 * max_depth + 4, dtype=np.int64)
        s_off = np.empty(2 * max_depth + 4, dtype=np.int64)
        s_feat = np.empty(2 * max_depth + 4, dtype=np.int64)
        s_zero, s_one = np.empty(2 * max_depth + 4), np.empty(2 * max_depth + 4)
        for slot in range(n_distinct[t]):
            key = distinct[distinct_start[t] + slot]
            out = term_start[t] + slot * terms[t]
            top = 0
            s_node[0], s_depth[0], s_off[0], s_feat[0] = 0, 0, 0, -1
            s_zero[0], s_one[0] = 1.0, 1.0
            top = 1
            while top > 0:
                top -= 1
                node, depth, parent = s_node[top], s_depth[top], s_off[top]
                off = parent + depth
                for i in range(depth):
                    pf[off + i], pz[off + i] = pf[parent + i], pz[parent + i]
                    po[off + i], pw[off + i] = po[parent + i], pw[parent + i]
                _extend(pf, pz, po, pw, off, depth, s_zero[top], s_one[top], s_feat[top])
                if node < 0:
                    value = leaf_value[leaves + ~node]
                    for i in range(1, depth + 1):
                        w = _unwound_sum(pz, po, pw, off, depth, i)
                        term_value[out + local[pf[off + i]]] += (
                            w * (po[off + i] - pz[off + i]) * value
                        )
                    continue
                g = start + node
                if (key >> node) & 1:
                    hot, cold = left[g], right[g]
                else:
                    hot, cold = right[g], left[g]
                w = count[g]
                hot_zero = _count(hot, start, leaves, count, leaf_count) / w
                cold_zero = _count(cold, start, leaves, count, leaf_count) / w
                incoming_zero, incoming_one = 1.0, 1.0
                split = feature[g]
                index = 0
                while index <= depth:
                    if pf[off + index] == split:
                        break
                    index += 1
                if index != depth + 1:
                    incoming_zero, incoming_one = pz[off + index], po[off + index]
                    _unwind(pf, pz, po, pw, off, depth, index)
                    depth -= 1
                # Cold below hot on the stack: the hot side is walked first, as LightGBM does.
                s_node[top], s_depth[top], s_off[top], s_feat[top] = cold, depth + 1, off, split
                s_zero[top], s_one[top] = cold_zero * incoming_zero, 0.0
                top += 1
                s_node[top], s_depth[top], s_off[top], s_feat[top] = hot, depth + 1, off, split
                s_zero[top], s_one[top] = hot_zero * incoming_zero, incoming_one
                top += 1


@numba.njit(cache=True, nogil=True)
def _replay(
    keys,
    splits,
    expected,
    terms,
    tree_features,
    feature_start,
    term_start,
    term_value,
    out_t,
    lo,
    hi,
):  # noqa: ANN001, ANN202
    """Each row's (of ``lo:hi``) additions, tree by tree: one per feature of the tree.

    ``out_t`` is the output by column, zeroed; rows go in blocks small enough that a
    tree's columns of the block stay in cache.
    """
    base = out_t.shape[0] - 1
    for block in range(lo, hi, _BLOCK):
        end = min(block + _BLOCK, hi)
        for t in range(splits.shape[0]):
            for r in range(block, end):
                out_t[base, r] += expected[t]
            n = terms[t]
            if splits[t] == 0:
                continue
            features = tree_features[feature_start[t] : feature_start[t] + n]
            for r in range(block, end):
                first = term_start[t] + keys[t, r] * n
                for j in range(n):
                    out_t[features[j], r] += term_value[first + j]


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``0:n`` cut into at most ``parts`` non-empty ``(lo, hi)`` ranges of about equal size."""
    bounds = np.linspace(0, n, parts + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def contributions(trees: Any, x: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
    """Fill ``out`` (``rows x features + 1``) with the contributions of ``x``'s rows.

    ``trees`` is a :class:`models.treeshap.Forest` (not imported: that module imports
    this one).

    The kernels release the GIL; ``threads`` Python threads share rows (patterns,
    replay) or trees (pattern numbers, additions).
    """
    n_trees = len(trees.splits)
    keys = np.empty((n_trees, len(x)), dtype=np.uint16)  # MAX_SPLITS bits
    xt = np.ascontiguousarray(x.T)  # features x rows: no copy of a Fortran-ordered x
    out_t = np.zeros((out.shape[1], len(x)))
    room = np.minimum(len(x), np.left_shift(1, trees.splits))
    distinct_start = np.concatenate([[0], np.cumsum(room)[:-1]]).astype(np.int64)
    distinct = np.empty(int(room.sum()), dtype=np.int64)
    n_distinct = np.zeros(n_trees, dtype=np.int64)
    max_depth = int(trees.depth.max()) if n_trees else 0
    with ThreadPoolExecutor(max(1, threads)) as pool:

        def each(func: Callable[[int, int], None], n: int) -> None:
            for future in [pool.submit(func, lo, hi) for lo, hi in split(n, 4 * threads)]:
                future.result()

        each(lambda lo, hi: _patterns(
            xt, trees.splits, trees.node_start, trees.feature, trees.threshold, trees.mode,
            trees.nan_left, trees.zero_left, trees.cat_start, trees.cat_words, trees.cat_bits,
            keys, lo, hi), len(x))  # fmt: skip
        each(lambda lo, hi: _slots(keys, trees.splits, distinct_start, distinct, n_distinct,
                                   lo, hi), n_trees)  # fmt: skip
        sizes = n_distinct * trees.terms
        term_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        term_value = np.zeros(int(sizes.sum()), dtype=np.float64)
        each(lambda lo, hi: _terms(
            trees.splits, trees.node_start, trees.leaf_start, trees.feature, trees.left,
            trees.right, trees.count, trees.leaf_value, trees.leaf_count, max_depth, trees.terms,
            trees.tree_features, trees.feature_start, trees.n_features, distinct_start, distinct,
            n_distinct, term_start, term_value, lo, hi), n_trees)  # fmt: skip
        each(lambda lo, hi: _replay(keys, trees.splits, trees.expected, trees.terms,
                                    trees.tree_features, trees.feature_start, term_start,
                                    term_value, out_t, lo, hi), len(x))  # fmt: skip
    out[:] = out_t.T
