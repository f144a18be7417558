"""Downstream tasks: a subset of a dataset's classes, relabelled to their position in the list.

    resolve_tasks(spec, *, dataset, num_classes, seed=0, ways=5) -> list[list[int]]
    make_task(imageset, classes) -> ImageSet
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ..errors import ConfigError, DatasetError
from .cifar100_superclasses import SUPERCLASSES
from .imageset import ImageSet

_SPEC_FORMS = "a list of class lists (e.g. [[0, 1, 2], [3, 4, 5]]), 'random:K' or 'superclass:K' (cifar100 only)"
# Up to this many possible tasks, "random:K" shuffles the full list of them (exact, fast for any K);
# above it, it draws tasks and skips repeats. Depends only on (num_classes, ways), so for a given
# seed "random:K" is always the first K tasks of "random:K+1".
_ENUMERATE_LIMIT = 20_000
# The most tasks "random:K" draws: every task is a probe and its analyses per method and seed,
# so this many already make a study of tens of thousands of units (which runs only with --yes).
MAX_RANDOM_TASKS = 10_000


def make_task(imageset: ImageSet, classes: Sequence[int]) -> ImageSet:
    """Keep the samples of ``classes`` and relabel class ``classes[i]`` to ``i``.

    Samples come class-ordered: every sample of ``classes[0]`` (in their original order),
    then every sample of ``classes[1]``, and so on, a fixed order that the analyses rely on.
    Class names follow the list; mean/std stay those of the parent dataset's train split.
    A class that is out of range, repeated, or has no samples is a :class:`DatasetError`.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise DatasetError(f"a task on {imageset.name or 'this dataset'} needs at least one class")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DatasetError(f"task classes {classes} repeat class {repeated[0]}")
    label = imageset.name or "the dataset"
    for c in classes:
        if not 0 <= c < imageset.num_classes:
            raise DatasetError(f"task class {c} is not a class of {label} (classes 0..{imageset.num_classes - 1})")
    counts = np.bincount(imageset.labels, minlength=imageset.num_classes)
    for c in classes:
        if counts[c] == 0:
            raise DatasetError(f"task class {c} ('{imageset.classes[c]}') has no samples in {label}")
    order = np.concatenate([np.flatnonzero(imageset.labels == c) for c in classes])
    new_labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts[classes])
    return ImageSet(
        images=imageset.images[order],
        labels=new_labels,
        classes=[imageset.classes[c] for c in classes],
        mean=imageset.mean,
        std=imageset.std,
        name=f"{imageset.name}{classes}".replace(" ", ""),
    )


def resolve_tasks(spec, *, dataset: str, num_classes: int, seed: int = 0, ways: int = 5) -> list[list[int]]:
    """The downstream tasks a config's ``tasks`` entry stands for, as lists of class indices.

    ``spec`` is one of:

    - a list of class lists: returned as given (as ints), after checking each task has at least
      two distinct classes in ``range(num_classes)`` and no task repeats another as a set;
    - ``"random:K"``: K ``ways``-way tasks, distinct as sets, drawn from ``range(num_classes)`` with
      ``numpy.random.default_rng(seed)``; each task sorted. Deterministic in (spec, num_classes,
      ways, seed), and "random:K" is a prefix of "random:K+1";
    - ``"superclass:K"`` (``dataset == "cifar100"`` only): the first K CIFAR-100 superclasses in
      coarse-label order (aquatic_mammals, fish, flowers, ...), each task = that superclass's fine
      classes, sorted. ``ways`` must be at most 5; below 5 each task keeps a subset of its
      superclass drawn with ``default_rng(seed)``.

    Anything else, or a K that cannot be met, is a one-line :class:`ConfigError`.
    """
    if isinstance(spec, str):
        kind, sep, count = spec.strip().partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in ("random", "superclass"):
            raise ConfigError(f"unknown tasks spec {spec!r}: expected {_SPEC_FORMS}")
        try:
            k = int(count.strip())
        except ValueError:
            raise ConfigError(f"tasks spec {spec!r}: K must be a positive integer; expected {_SPEC_FORMS}") from None
        if k < 1:
            raise ConfigError(f"tasks spec {spec!r}: K must be a positive integer, got {k}")
        if kind == "random":
            return _random_tasks(k, num_classes=int(num_classes), ways=int(ways), seed=int(seed))
        return _superclass_tasks(k, dataset=dataset, num_classes=int(num_classes), ways=int(ways), seed=int(seed))
    if isinstance(spec, Sequence) and spec and all(isinstance(t, Sequence) and not isinstance(t, str) for t in spec):
        return _checked_lists(spec, int(num_classes))
    raise ConfigError(f"unknown tasks spec {spec!r}: expected {_SPEC_FORMS}")


def _checked_lists(spec: Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    tasks, seen = [], set()
    for task in spec:
        try:
            classes = [int(c) for c in task]
        except (TypeError, ValueError):
            raise ConfigError(f"task {list(task)} must list integer class indices") from None
        if any(c != float(raw) for c, raw in zip(classes, task)):
            raise ConfigError(f"task {list(task)} must list integer class indices")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"task {classes} needs at least two distinct classes")
        outside = [c for c in classes if not 0 <= c < num_classes]
        if outside:
            raise ConfigError(f"task {classes}: class {outside[0]} is outside 0..{num_classes - 1}")
        key = frozenset(classes)
        if key in seen:
            raise ConfigError(f"task {classes} repeats an earlier task")
        seen.add(key)
        tasks.append(classes)
    return tasks


def _check_ways(ways: int, num_classes: int) -> None:
    if not 2 <= ways <= num_classes:
        raise ConfigError(f"ways must be between 2 and the {num_classes} classes, got {ways}")


def _random_tasks(k: int, *, num_classes: int, ways: int, seed: int) -> list[list[int]]:
    _check_ways(ways, num_classes)
    possible = math.comb(num_classes, ways)
    if k > possible:
        raise ConfigError(f"'random:{k}': only {possible} distinct {ways}-way tasks exist among {num_classes} classes")
    if k > MAX_RANDOM_TASKS:
        raise ConfigError(f"'random:{k}': at most {MAX_RANDOM_TASKS:,} tasks (each is a probe and its analyses per method "
                          "and seed); ask for fewer")
    rng = np.random.default_rng(seed)
    if possible <= _ENUMERATE_LIMIT:
        every = np.array(list(combinations(range(num_classes), ways)), dtype=np.int64)
        return [row.tolist() for row in every[rng.permutation(possible)[:k]]]
    tasks, seen = [], set()
    while len(tasks) < k:  # repeats are rare here: at least _ENUMERATE_LIMIT possible tasks
        task = tuple(sorted(int(c) for c in rng.choice(num_classes, size=ways, replace=False)))
        if task not in seen:
            seen.add(task)
            tasks.append(list(task))
    return tasks


def _superclass_tasks(k: int, *, dataset: str, num_classes: int, ways: int, seed: int) -> list[list[int]]:
    if dataset != "cifar100":
        raise ConfigError(f"'superclass:{k}' applies only to dataset cifar100 (its 20 superclasses), not {dataset!r}")
    if num_classes != 100:
        raise ConfigError(f"'superclass:{k}' needs the 100 fine classes of cifar100, got num_classes={num_classes}")
    if k > len(SUPERCLASSES):
        raise ConfigError(f"'superclass:{k}': cifar100 has only {len(SUPERCLASSES)} superclasses")
    if not 2 <= ways <= 5:
        raise ConfigError(f"'superclass:{k}': ways must be between 2 and 5 (a superclass has 5 classes), got {ways}")
    groups = list(SUPERCLASSES.values())[:k]
    if ways == 5:
        return [list(g) for g in groups]
    rng = np.random.default_rng(seed)
    return [sorted(int(c) for c in rng.choice(g, size=ways, replace=False)) for g in groups]
