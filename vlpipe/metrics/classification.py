"""Classification metrics: accuracy, per-class counts, confusion matrix, majority-class baseline.

Pure functions of label lists (class names or indices); accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def classification_report(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class support / predicted / correct / recall / precision, and the confusion
    matrix (``matrix[true][predicted]``, rows and columns in ``labels`` order)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels vs {len(predicted)} predictions")
    n = len(labels)
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(truth, predicted):
        matrix[int(t)][int(p)] += 1
    correct = sum(matrix[i][i] for i in range(n))
    per_class = {}
    for i, name in enumerate(labels):
        support = sum(matrix[i])
        pred = sum(row[i] for row in matrix)
        per_class[name] = {
            "support": support,
            "predicted": pred,
            "correct": matrix[i][i],
            "recall": matrix[i][i] / support if support else None,
            "precision": matrix[i][i] / pred if pred else None,
        }
    return {
        "examples": len(truth),
        "accuracy": correct / len(truth) if len(truth) else 0.0,
        "per_class": per_class,
        "confusion": {"rows": "true label", "columns": "predicted label", "labels": list(labels), "matrix": matrix},
    }


def majority_baseline(train_labels: Sequence[str], eval_labels: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Always predict the most frequent class of ``train_labels`` (ties: the first in ``labels``
    order); its accuracy on ``eval_labels``."""
    counts = Counter(train_labels)
    if not counts:
        return {"rule": "majority class of the training split", "class": None, "accuracy": None, "train_counts": {}}
    best = max(labels, key=lambda name: (counts.get(name, 0), -list(labels).index(name)))
    hits = sum(1 for x in eval_labels if x == best)
    return {
        "rule": "majority class of the training split",
        "class": best,
        "accuracy": hits / len(eval_labels) if eval_labels else 0.0,
        "train_counts": {name: counts.get(name, 0) for name in labels},
    }
