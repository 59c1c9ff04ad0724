"""LightGBM's exact TreeSHAP, and its raw scores bit for bit; TreeSHAP once per decision pattern.

``Booster.predict(pred_contrib=True)`` walks every node of every tree for every row
(the path-dependent TreeSHAP of Lundberg et al., arXiv:1706.06060). What a tree adds to
a row depends on the row only through the side each of the tree's splits sends it to
(its *pattern*): a compact tree (``num_leaves`` 15: 14 splits) sees a few hundred
patterns among hundreds of thousands of rows. So, per tree, the additions of each
pattern present are computed once, with LightGBM's own arithmetic in LightGBM's order,
and summed per feature; each row then adds its patterns' sums to its output row, tree
by tree: one addition per feature a tree splits on (about 11 on the benchmark's
trees) instead of one per leaf and path feature (about 60). The values are LightGBM's
up to the rounding of those sums (tests: within 1e-12); they are not its bits, which
would need LightGBM's 60 additions per tree, each to the row's running total.

:func:`margins` is LightGBM's raw score from the same trees, bit for bit: each row's
leaves summed in LightGBM's order. What they do not cover (linear trees, several trees per
iteration, trees of more than :data:`MAX_SPLITS` splits) is left to LightGBM:
:func:`contributions` returns ``None`` and its callers ask LightGBM; :func:`margins`
asks it itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

#: Largest number of splits per tree handled here (a pattern is one bit per split).
MAX_SPLITS = 16
#: LightGBM's kZeroThreshold (a float): smaller magnitudes are zero to the predictor.
ZERO = float(np.float32(1e-35))
#: Rows per pass: keeps the per-row patterns (rows x trees x 2 bytes) small.
CHUNK_ROWS = 100_000

_CATEGORICAL, _DEFAULT_LEFT = 1, 2


@dataclass(frozen=True)
class Forest:
    """A booster's trees as flat arrays (LightGBM's own: children ``~leaf`` for leaves).

    Attributes:
        n_features: Columns of the input (the output has one more: the base value).
        splits: Per tree, its number of splits (``num_leaves - 1``).
        node_start: Per tree, the offset of its first split in the split arrays.
        leaf_start: Per tree, the offset of its first leaf in the leaf arrays.
        feature, threshold, left, right, count: Per split.
        mode: Per split, 0 numerical, 1 numerical whose zero band needs its own test
            (missing type ``Zero``, or a threshold inside the band), 2 categorical.
        nan_left, zero_left: Per numerical split, whether NaN, and a value the
            predictor reads as zero (``|x| <= kZeroThreshold``), go left.
        cat_start, cat_words: Per categorical split, its bitset in ``cat_bits``.
        leaf_value, leaf_count: Per leaf.
        keep: Per split, a mask of its tree's leaves (bit ``i``: the ``i``-th leaf from
            the left) without those of its left subtree (see ``treeshap_margins._margins``).
        leaf_order: Per leaf position from the left, the tree's own leaf number.
        expected: Per tree, LightGBM's ``ExpectedValue()``.
        terms: Per tree, the features it splits on: the additions one row gets from it.
        tree_features, feature_start: Those features, tree after tree (each tree's
            from its offset).
        depth: Per tree, its greatest leaf depth.
    """

    n_features: int
    splits: np.ndarray
    node_start: np.ndarray
    leaf_start: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    mode: np.ndarray
    nan_left: np.ndarray
    zero_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    count: np.ndarray
    cat_start: np.ndarray
    cat_words: np.ndarray
    cat_bits: np.ndarray
    leaf_value: np.ndarray
    leaf_count: np.ndarray
    keep: np.ndarray
    leaf_order: np.ndarray
    expected: np.ndarray
    terms: np.ndarray
    tree_features: np.ndarray
    feature_start: np.ndarray
    depth: np.ndarray


def _fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def _depth(left: list[int], right: list[int]) -> int:
    """A tree's greatest leaf depth."""
    depth, stack = 0, [(0, 0)]
    while stack:
        node, level = stack.pop()
        if node < 0:
            depth = max(depth, level)
        else:
            stack += [(left[node], level + 1), (right[node], level + 1)]
    return depth


def _leaf_masks(left: list[int], right: list[int]) -> tuple[list[int], list[int]]:
    """Per split, the leaves' mask without its left subtree's; the leaves from the left."""
    keep, order = [0] * len(left), []

    def leaves(node: int) -> int:  # the mask of the leaves under node
        if node < 0:
            order.append(~node)
            return 1 << (len(order) - 1)
        under_left = leaves(left[node])
        keep[node] = ~under_left & 0xFFFFFFFF
        return under_left | leaves(right[node])

    leaves(0)
    return keep, order


def _split_sides(
    decision: int, threshold: float, bounds: list[int], bits_before: int, cols: dict[str, list]
) -> None:
    """A split's mode, NaN and zero sides and bitset (LightGBM's ``Tree::Decision``)."""
    if decision & _CATEGORICAL:
        i = int(threshold)
        cols["mode"].append(2), cols["nan_left"].append(False), cols["zero_left"].append(False)
        cols["cat_start"].append(bits_before + bounds[i])
        cols["cat_words"].append(bounds[i + 1] - bounds[i])
        return
    missing, default_left = (decision >> 2) & 3, bool(decision & _DEFAULT_LEFT)
    # A value the predictor reads as zero is 0.0; NaN is the default side when missing
    # is NaN, else 0.0 too; zero is the default side when missing is Zero.
    zero_left = default_left if missing == 1 else threshold >= 0.0
    cols["zero_left"].append(zero_left)
    cols["nan_left"].append(default_left if missing == 2 else zero_left)
    cols["mode"].append(1 if missing == 1 or -ZERO <= threshold <= ZERO else 0)
    cols["cat_start"].append(0), cols["cat_words"].append(0)


def forest(booster: lgb.Booster) -> Forest | None:
    """The booster's trees as arrays, or ``None`` when this module does not cover it."""
    text = booster.model_to_string(num_iteration=-1)
    header = _fields(text.split("Tree=", 1)[0])
    if int(header.get("num_tree_per_iteration", "1")) != 1:
        return None
    n_features = int(header["max_feature_idx"]) + 1
    n_trees = booster.num_trees()
    if booster.best_iteration > 0:
        n_trees = min(n_trees, booster.best_iteration)
    blocks = text.split("Tree=")[1 : n_trees + 1]
    cols: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "count",
                                             "mode", "nan_left", "zero_left", "cat_start",
                                             "cat_words", "leaf_value", "leaf_count", "keep",
                                             "leaf_order", "tree_features")}  # fmt: skip
    cat_bits: list[int] = []
    splits, expected, terms, depth = [], [], [], []
    for block in blocks:
        f = _fields(block.split("end of trees")[0])
        if int(f.get("is_linear", "0")):
            return None
        n_leaves = int(f["num_leaves"])
        values = [float(v) for v in f["leaf_value"].split()]
        if n_leaves == 1:
            splits.append(0), expected.append(values[0]), terms.append(0), depth.append(0)
            cols["leaf_value"] += values
            cols["leaf_count"].append(0), cols["leaf_order"].append(0)
            continue
        if n_leaves - 1 > MAX_SPLITS:
            return None
        leaf_count = [int(v) for v in f["leaf_count"].split()]
        internal = [int(v) for v in f["internal_count"].split()]
        # ExpectedValue(): the same operations in the same order as LightGBM's.
        total, value = float(internal[0]), 0.0
        for n, v in zip(leaf_count, values, strict=True):
            value += (n / total) * v
        feature = [int(v) for v in f["split_feature"].split()]
        left = [int(v) for v in f["left_child"].split()]
        right = [int(v) for v in f["right_child"].split()]
        decision = [int(v) for v in f["decision_type"].split()]
        threshold = [float(v) for v in f["threshold"].split()]
        bounds = [int(v) for v in f.get("cat_boundaries", "0").split()]
        words = [int(v) for v in f.get("cat_threshold", "").split()]
        for d, t in zip(decision, threshold, strict=True):
            _split_sides(d, t, bounds, len(cat_bits), cols)
        cat_bits += words
        features = list(dict.fromkeys(feature))  # the tree's split features, each once
        cols["tree_features"] += features
        keep, order = _leaf_masks(left, right)
        cols["keep"] += keep
        cols["leaf_order"] += order
        splits.append(n_leaves - 1), expected.append(value)
        terms.append(len(features)), depth.append(_depth(left, right))
        cols["feature"] += feature
        cols["threshold"] += threshold
        cols["left"] += left
        cols["right"] += right
        cols["count"] += internal
        cols["leaf_value"] += values
        cols["leaf_count"] += leaf_count
    n_leaves_per_tree = [s + 1 for s in splits]
    return Forest(
        n_features=n_features,
        splits=np.array(splits, dtype=np.int64),
        node_start=np.concatenate([[0], np.cumsum(splits)[:-1]]).astype(np.int64),
        leaf_start=np.concatenate([[0], np.cumsum(n_leaves_per_tree)[:-1]]).astype(np.int64),
        feature=np.array(cols["feature"], dtype=np.int64),
        threshold=np.array(cols["threshold"], dtype=np.float64),
        mode=np.array(cols["mode"], dtype=np.int64),
        nan_left=np.array(cols["nan_left"], dtype=np.bool_),
        zero_left=np.array(cols["zero_left"], dtype=np.bool_),
        left=np.array(cols["left"], dtype=np.int64),
        right=np.array(cols["right"], dtype=np.int64),
        count=np.array(cols["count"], dtype=np.float64),
        cat_start=np.array(cols["cat_start"], dtype=np.int64),
        cat_words=np.array(cols["cat_words"], dtype=np.int64),
        cat_bits=np.array(cat_bits, dtype=np.uint32),
        leaf_value=np.array(cols["leaf_value"], dtype=np.float64),
        leaf_count=np.array(cols["leaf_count"], dtype=np.float64),
        keep=np.array(cols["keep"], dtype=np.uint32),
        leaf_order=np.array(cols["leaf_order"], dtype=np.int64),
        expected=np.array(expected, dtype=np.float64),
        terms=np.array(terms, dtype=np.int64),
        tree_features=np.array(cols["tree_features"], dtype=np.int64),
        feature_start=np.concatenate([[0], np.cumsum(terms)[:-1]]).astype(np.int64),
        depth=np.array(depth, dtype=np.int64),
    )


def contributions(
    booster: lgb.Booster, matrix: np.ndarray, num_threads: int | None = None
) -> np.ndarray | None:
    """``booster.predict(matrix, pred_contrib=True)`` (to rounding), or ``None``.

    Args:
        booster: A binary or regression LightGBM booster.
        matrix: float64 ``(rows, features)`` input; read without a copy when laid
            out by feature (Fortran order, as :meth:`~models.model.ModelInput.rows` makes it).
        num_threads: Threads (default: all).

    Returns:
        ``(rows, features + 1)``, the last column the base value; ``None`` when the
        booster is not covered here (see the module docstring).
    """
    trees = _forest_of(booster)
    if trees is None or matrix.ndim != 2 or matrix.shape[1] != trees.n_features:
        return None
    try:
        from models import treeshap_kernels as kernels
    except ImportError as exc:  # numba missing or broken: LightGBM computes the same
        log.warning("Reason codes from LightGBM's own TreeSHAP (slower): %s", exc)
        return None

    matrix = np.asarray(matrix, dtype=np.float64)  # by row or by feature: kernels take both
    out = np.empty((len(matrix), trees.n_features + 1), dtype=np.float64)
    threads = num_threads if num_threads and num_threads > 0 else os.cpu_count() or 1
    for start in range(0, len(matrix), CHUNK_ROWS):
        block = matrix[start : start + CHUNK_ROWS]
        kernels.contributions(trees, block, out[start : start + len(block)], threads)
    return out


def margins(booster: lgb.Booster, matrix: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """``booster.predict(matrix, raw_score=True)``, the same bits.

    Each row's leaves in the trees of :func:`forest`, found by masks instead of walks
    (``treeshap_margins._margins``), summed in LightGBM's order: on the 1M benchmark's
    rows 1.5 (conversion) to 3.4 (churn) times the speed of walking each tree, which
    was itself about 1.4 times LightGBM's (its predictor copies each row into a sparse
    vector and back first).

    Args:
        booster: A binary or regression LightGBM booster.
        matrix: float64 ``(rows, features)`` input; read without a copy when laid
            out by feature (Fortran order, as :meth:`~models.model.ModelInput.rows` makes it).
        num_threads: Threads (default: all).

    Returns:
        ``(rows,)`` raw scores; LightGBM's own for a booster not covered here.
    """
    trees = _forest_of(booster)
    if trees is None or matrix.ndim != 2 or matrix.shape[1] != trees.n_features:
        return booster.predict(matrix, raw_score=True)
    try:
        from models import treeshap_margins
    except ImportError as exc:  # numba missing or broken: LightGBM predicts the same
        log.warning("Scores from LightGBM's own predictor (slower): %s", exc)
        return booster.predict(matrix, raw_score=True)
    matrix = np.asarray(matrix, dtype=np.float64)  # by row or by feature: kernels take both
    out = np.empty(len(matrix), dtype=np.float64)
    threads = num_threads if num_threads and num_threads > 0 else os.cpu_count() or 1
    treeshap_margins.margins(trees, matrix, out, threads)
    return out


def _forest_of(booster: lgb.Booster) -> Forest | None:
    """The booster's :class:`Forest`, kept on the booster while its trees stay the same."""
    key = (booster.num_trees(), booster.best_iteration)
    cached = getattr(booster, "_leadscore_forest", None)
    if cached is None or cached[0] != key:
        cached = (key, forest(booster))
        booster._leadscore_forest = cached  # type: ignore[attr-defined]
    return cached[1]
