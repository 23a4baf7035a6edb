"""The selection split: the train photos a fine-tuning run holds back for every choice it makes (epoch, temperature,
/hello policy, unknown threshold), whole sessions at a time, so that no held-back photo has a near-duplicate among
the photos the network learns from and GroceryStore val is measured only once.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.datasets import Split


def photo_groups(features: np.ndarray, class_ids: list[int], threshold: float) -> np.ndarray:
    """Group ids joining photos of one class whose frozen-feature cosine similarity exceeds `threshold`, and so on
    transitively: GroceryStore's train photos come in sessions of near-duplicates (the same bin shot again), and a
    selection photo whose twin is in the fit set would make every choice look better than it is."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    ids = np.asarray(class_ids)
    parent = np.arange(len(ids))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for class_id in np.unique(ids):
        members = np.flatnonzero(ids == class_id)
        similar = np.triu(unit[members] @ unit[members].T > threshold, 1)
        for a, b in zip(*np.nonzero(similar)):
            parent[root(members[a])] = root(members[b])
    return np.array([root(i) for i in range(len(ids))])


def selection_split(split: Split, fraction: float, seed: int = 0, groups: np.ndarray | None = None) -> tuple[Split, Split]:
    """(fit, selection): about `fraction` of each class's photos held back, whole groups at a time (`photo_groups`;
    None: every photo its own group), at least one photo of each class with two or more on each side."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(split.class_ids)
    groups = np.arange(len(ids)) if groups is None else np.asarray(groups)
    held: list[int] = []
    for class_id in np.unique(ids):
        members = np.flatnonzero(ids == class_id)
        target = max(1, round(fraction * len(members)))
        taken: list[int] = []
        for group in rng.permutation(np.unique(groups[members])):
            in_group = members[groups[members] == group].tolist()
            if len(taken) >= target:
                break
            if len(taken) + len(in_group) <= max(1.5 * target, 1) and len(taken) + len(in_group) < len(members):
                taken += in_group
        held += taken
    held_set = set(held)

    def part(indices: list[int]) -> Split:
        return Split([split.paths[i] for i in indices], [split.class_ids[i] for i in indices])

    return part([i for i in range(len(ids)) if i not in held_set]), part(sorted(held_set))
