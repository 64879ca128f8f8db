"""Are the file's labels in the order its outputs mean? Checked on labelled data.

Every numerical check compares output vectors index by index, so labels imported in
another order (sorted instead of the training order) pass them all while nearly every
prediction names the wrong class. On real data the order shows: the confusion matrix of
the file's outputs against the data's labels has its mass on the diagonal when the
order is right, and on a permutation of it when it is not. `check_labels` finds the
relabelling of the outputs that the data supports best (an assignment that maximizes
the matched rows) and fails when the file's own order gets less than half of its
accuracy, naming the labels that look swapped.

A model that has not learned enough to show its order is not judged. A relabelling can
gain from the marginals alone (pointing a model's favourite output at the commonest
class), so the gain must come from the model's information: the best relabelling's
agreement beyond what its marginals give by chance, Cohen's kappa of the relabelled
confusion matrix, must reach INFORMATIVE_KAPPA.
"""

from __future__ import annotations

import numpy as np

from rnn_export.parity.results import CaseResult, ParityUsageError

FAMILY = "labels"
# The file's order fails when it matches fewer than this share of the rows that the
# best relabelling matches: a wrong order leaves a few percent, a right one ~100%.
ORDER_SHARE = 0.5
# The order is judged only for a model whose best relabelling agrees with the data
# beyond chance: kappa >= this ("fair agreement"); a constant predictor has kappa 0.
INFORMATIVE_KAPPA = 0.2
NAMED = 2  # swapped labels named in the one-line message


def best_assignment(gain: np.ndarray) -> np.ndarray:
    """The permutation p maximizing sum_j gain[p[j], j] (square gain), by the Hungarian
    method with potentials, O(n^3).

    Returns:
        p (n,) int: p[j] is the row assigned to column j.
    """
    n = gain.shape[0]
    cost = gain.max(initial=0.0) - gain.astype(np.float64)  # minimize
    u, v = np.zeros(n + 1), np.zeros(n + 1)
    match = np.zeros(n + 1, dtype=np.int64)  # match[col] = row, 1-based; 0 = free
    way = np.zeros(n + 1, dtype=np.int64)
    for row in range(1, n + 1):
        match[0] = row
        col0 = 0
        low = np.full(n + 1, np.inf)
        used = np.zeros(n + 1, dtype=bool)
        while True:
            used[col0] = True
            r0 = match[col0]
            cols = np.flatnonzero(~used)
            reduced = cost[r0 - 1, cols - 1] - u[r0] - v[cols]
            better = reduced < low[cols]
            low[cols[better]] = reduced[better]
            way[cols[better]] = col0
            col1 = cols[np.argmin(low[cols])]
            delta = low[col1]
            u[match[used]] += delta
            v[used] -= delta
            low[~used] -= delta
            col0 = col1
            if match[col0] == 0:
                break
        while col0:
            col1 = way[col0]
            match[col0] = match[col1]
            col0 = col1
    return match[1:] - 1


def check_labels(
    file_labels, data_labels, truth: np.ndarray, predicted: np.ndarray, provider: str = "cpu"
) -> CaseResult:
    """The file's label order against labelled data.

    Args:
        file_labels: the file's labels (output index -> name).
        data_labels: the data's label names (truth index -> name).
        truth: (N,) indices into data_labels; predicted: (N,) the file's top outputs.

    Returns:
        A CaseResult of family "labels": an error naming the swapped labels and both
        accuracies when the order fails, else the accuracy in its detail.

    Raises:
        ParityUsageError: the data has labels the file does not.
    """
    file_labels = list(file_labels)
    missing = sorted(set(data_labels) - set(file_labels))
    if missing:
        raise ParityUsageError(
            f"the data has labels the file does not: {', '.join(missing[:5])}; the file's "
            f"labels are {', '.join(file_labels[:8])}{', ...' if len(file_labels) > 8 else ''}"
        )
    C, N = len(file_labels), len(truth)
    index = np.array([file_labels.index(name) for name in data_labels], dtype=np.int64)
    confusion = np.zeros((C, C), dtype=np.int64)  # (true, predicted), in the file's order
    np.add.at(confusion, (index[np.asarray(truth)], np.asarray(predicted)), 1)
    as_filed = int(np.trace(confusion))
    p = best_assignment(confusion)
    best = int(confusion[p, np.arange(C)].sum())
    # By chance: rows expected on the relabelled diagonal were predictions independent
    # of the truth, with the same counts per label and per output.
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / max(N, 1)
    chance = float(expected[p, np.arange(C)].sum())
    kappa = (best - chance) / (N - chance) if chance < N else 0.0
    base = dict(
        provider=provider, name=f"{N} labelled rows", family=FAMILY, batch_size=N, length="-"
    )
    figures = f"{as_filed}/{N} right as filed, {best}/{N} reordered"
    if kappa < INFORMATIVE_KAPPA:
        figures += (
            f"; not judged: the model agrees with the data little beyond chance (kappa "
            f"{kappa:.2f} reordered, {chance:.0f}/{N} by chance)"
        )
    elif as_filed < ORDER_SHARE * best:
        moved = [j for j in range(C) if p[j] != j]
        moved.sort(key=lambda j: -confusion[p[j], j])
        named = ", ".join(
            f"{file_labels[j]!r} outputs match {file_labels[p[j]]!r} rows" for j in moved[:NAMED]
        )
        more = f" (+{len(moved) - NAMED} more)" if len(moved) > NAMED else ""
        return CaseResult(
            **base,
            error=f"labels out of order: {as_filed}/{N} right as filed, {best}/{N} reordered; "
            f"{named}{more}",
        )
    return CaseResult(**base, detail=figures)
