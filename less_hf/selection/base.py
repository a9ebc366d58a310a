"""The selector interface every method shares: score the pool per target, keep the top fraction or n."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..errors import BudgetError, InputError
from ..output import subset_with_scores, top_indices
from .policies import ALIASES, MAX, PER_TASK, POLICIES, TASK_COLUMN, UNION, combine_max, resolve_policy, round_robin

DEFAULT_FRACTION = 0.05


def check_dataset(value: Any, what: str) -> None:
    """A clear error when ``value`` is not a `datasets.Dataset` (a list of rows, a pandas frame, a DatasetDict...)."""
    from datasets import Dataset, DatasetDict

    if isinstance(value, Dataset):
        return
    hint = "pick a split, e.g. dataset['train']" if isinstance(value, DatasetDict) else "e.g. Dataset.from_list(rows)"
    raise InputError(f"{what} must be a datasets.Dataset, got {type(value).__name__}: {hint}.")


def as_target_dict(targets: Any) -> tuple[dict[str, Any], bool]:
    """Accept one `datasets.Dataset` (named "target") or ``{name: Dataset}``; say which it was."""
    if isinstance(targets, dict):
        if not targets:
            raise InputError("targets is an empty dict; pass at least one target task.")
        for name, target in targets.items():
            if not isinstance(name, str):
                raise InputError(f"target names must be strings, got {name!r}.")
            check_dataset(target, f"target {name!r}")
        return targets, False
    check_dataset(targets, "targets")
    return {"target": targets}, True


def budget(n_rows: int, fraction: float | None, n: int | None) -> int:
    """How many rows to keep: exactly ``n``, or ``round(fraction · n_rows)`` (default 5%), at least 1.

    Raises:
        ValueError: both or an invalid one given: ``fraction`` outside (0, 1] (or NaN), ``n`` < 1, not an integer, or
            larger than the pool.
    """
    if fraction is not None and n is not None:
        raise InputError("Pass either fraction or n, not both.")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, float, np.integer)) or int(n) != n:
            raise InputError(f"n must be a whole number of rows, got {n!r}.")
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}.")
        if n > n_rows:
            raise InputError(f"n={n} is larger than the pool ({n_rows} rows): pass n <= {n_rows}, or fraction=1.0.")
        return int(n)
    fraction = DEFAULT_FRACTION if fraction is None else fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}.")
    return max(1, round(fraction * n_rows))


def check_budget(scores: np.ndarray, k: int, allow_fewer: bool, name: str) -> int:
    """``k``, or the number of selectable rows when there are fewer and ``allow_fewer``; else a clear error."""
    selectable = int(np.isfinite(scores).sum())
    if selectable == 0:
        raise BudgetError(
            f"No pool row is selectable for {name!r}: every score is -inf (no row keeps a supervised token, or every "
            "row's features are NaN/inf). Check the pool's completions and --max_length."
        )
    if selectable < k:
        if not allow_fewer:
            raise BudgetError(
                f"{name!r}: the budget asks for {k} rows but only {selectable} of {len(scores)} pool rows are "
                f"selectable ({len(scores) - selectable} have no supervised token or non-finite features), "
                f"{k - selectable} short. Ask for n <= {selectable}, or pass allow_fewer=True (--allow_fewer) to "
                "take them all."
            )
        return selectable
    return k


MODES = (*POLICIES, *ALIASES)
"""Every ``mode`` :meth:`Selector.select` accepts: the policies and the deprecated ``combined`` (= ``max``)."""
COMBINED = UNION


class Selector(ABC):
    """Base class: subclasses implement :meth:`score`; :meth:`select` turns scores into datasets.

    Every method shares :meth:`select`'s options: ``fraction`` or ``n``, ``mode`` (the multi-target policy:
    ``per_task``, ``max`` or ``round_robin``, see :mod:`less_hf.selection.policies`) and ``seed`` (for the methods
    that sample). After a call, ``scores_`` holds ``{task: (len(pool),) scores}`` (plus ``"combined"``, the
    :meth:`combine` of the tasks' scores, for the ``max`` and ``round_robin`` policies) and ``policy_`` the policy.

    Subclasses may override :meth:`pick` (how k rows are drawn from the scores; default: the top k),
    :meth:`pick_task` (one task's selection; default: :meth:`pick`), :meth:`task_order` (a task's ranking for
    ``round_robin``; default: :meth:`pick` of every selectable row) and :meth:`combine` (default: the max over tasks).
    """

    score_column = "score"
    seed: int = 0
    samples: bool = False
    """Whether :meth:`pick` draws rows at random (weighted by score) instead of taking the top k."""

    @abstractmethod
    def score(self, pool, targets: dict[str, Any]) -> dict[str, np.ndarray]:
        """``{target name: (len(pool),) scores}``; higher is better; ``-inf`` means never select."""

    def combine(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Scores of the union of the targets (``mode="max"``); default: :func:`combine_max`."""
        return combine_max(scores)

    def pick(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of the selected rows, in the order they are returned (default: the top k, best first)."""
        return top_indices(scores, k)

    def pick_task(self, name: str, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """One task's selection in ``per_task`` mode (default: :meth:`pick`; RDS+ takes its target examples in
        turn)."""
        return self.pick(scores, k, rng)

    def task_order(self, name: str, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A task's ranking of its selectable rows for ``round_robin``, best (or first drawn) first."""
        return self.pick(scores, int(np.isfinite(scores).sum()), rng)

    def subset(self, pool, indices: np.ndarray, scores: np.ndarray):
        """The returned `Dataset`: the pool's rows at ``indices`` with score and rank columns."""
        return subset_with_scores(pool, indices, scores, self.score_column)

    def select(
        self,
        pool,
        targets: Any,
        fraction: float | None = None,
        n: int | None = None,
        mode: str = PER_TASK,
        seed: int | None = None,
        allow_fewer: bool = False,
    ):
        """Select rows of ``pool`` for each target.

        Args:
            pool: the candidates (`datasets.Dataset`).
            targets: one `Dataset` of target examples, or ``{name: Dataset}`` to select for several tasks in one pass.
            fraction: keep this fraction of the pool (default 5%).
            n: keep exactly n rows (instead of fraction).
            mode: the multi-target policy. ``"per_task"`` (default): one selection per target. ``"max"``: one
                selection for the union of the targets, the top rows of :meth:`combine` of the tasks' scores (their
                max). ``"round_robin"``: one selection for the union, taking each task's next best unseen row in
                turn (Ivison et al. 2025); its rows carry a ``selected_for`` column naming the task that took them.
                ``"combined"`` is the deprecated name of ``"max"``.
            seed: seed of the methods that sample (random, DSIR, TSDS); default: the selector's ``seed``.
            allow_fewer: when fewer pool rows are selectable (finite score) than the budget asks for, return those
                instead of raising :class:`~less_hf.errors.BudgetError`. Zero selectable rows is always an error.

        Returns:
            The selected rows (all of the pool's columns, plus score and rank columns), in selection order: one
            `Dataset` if ``targets`` was a `Dataset` or the policy is ``max`` / ``round_robin``, else
            ``{name: Dataset}``.
        """
        policy = resolve_policy(mode)
        check_dataset(pool, "pool")
        if len(pool) == 0:
            raise InputError("The pool is empty: nothing to select from.")
        named, single = as_target_dict(targets)
        for name, target in named.items():
            if len(target) == 0:
                raise InputError(f"Target {name!r} has no rows: pass a few examples of the task.")
        k = budget(len(pool), fraction, n)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        self.scores_ = self.score(pool, named)
        self.policy_ = policy
        if policy == PER_TASK:
            selected = {
                name: self.subset(pool, self.pick_task(name, s, check_budget(s, k, allow_fewer, name), rng), s)
                for name, s in self.scores_.items()
            }
            self._last = (pool, named, selected)
            return selected["target"] if single else selected
        union = self.combine(self.scores_)
        k = check_budget(union, k, allow_fewer, UNION)
        if policy == MAX:
            result = self.subset(pool, self.pick(union, k, rng), union)
        else:
            result = self._round_robin(pool, k, allow_fewer, rng)
        self.scores_[UNION] = union
        self._last = (pool, named, {UNION: result})
        return result

    def _round_robin(self, pool, k: int, allow_fewer: bool, rng: np.random.Generator):
        """The ``round_robin`` selection: the tasks' rankings merged by :func:`round_robin`."""
        if TASK_COLUMN in pool.column_names:
            raise InputError(
                f"The pool already has a column {TASK_COLUMN!r} (round_robin names each row's task there): rename it."
            )
        names = list(self.scores_)
        indices, owner = round_robin([self.task_order(name, self.scores_[name], rng) for name in names], k)
        if len(indices) < k and not allow_fewer:
            raise BudgetError(
                f"round_robin: the budget asks for {k} rows but the tasks' rankings hold only {len(indices)} distinct "
                "rows. Ask for fewer rows, or pass allow_fewer=True (--allow_fewer) to take them all."
            )
        picked = np.full(len(pool), -np.inf)  # each row's score for the task that took it
        for row, task in zip(indices, owner):
            picked[row] = self.scores_[names[task]][row]
        subset = self.subset(pool, indices, picked)
        return subset.add_column(TASK_COLUMN, [names[t] for t in owner])

    @property
    def method(self) -> str:
        """This selector's name in :data:`less_hf.selection.SELECTORS` (the CLI's ``--method``)."""
        from . import SELECTORS

        exact = [name for name, cls in SELECTORS.items() if type(self) is cls]
        subclass = [name for name, cls in SELECTORS.items() if isinstance(self, cls)]
        return (exact or subclass or [type(self).__name__])[0]

    def settings(self) -> dict[str, Any]:
        """What this selector was run with, for ``selection.json`` and the dataset card: its plain attributes and
        its config (LESS and TSDS add the warmup's model, checkpoints and projection)."""
        plain = (str, int, float, bool, type(None))
        settings: dict[str, Any] = {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and not k.endswith("_") and isinstance(v, plain)  # not fitted state (policy_)
        }
        config = getattr(self, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            settings["config"] = config.to_dict()
        return settings

    def save(self, output_dir, source_column: str | None = None, pool_spec: str | None = None):
        """Write the last :meth:`select`'s result as a selection folder, exactly as ``less-hf select`` does: one
        subset per target (``save_to_disk``), ``scores/``, and ``selection.json`` with the provenance, written
        atomically and checked by ``less_hf.report``, ``less_hf.export`` and ``less_hf.push_to_hub``.

        Args:
            output_dir: the selection folder (replaced whole if it already holds a selection, refused if it holds
                anything else).
            source_column: pool column naming each row's source, for the source mix (default ``source``).
            pool_spec: how the pool was given (a path or Hub name), recorded as is.

        Returns:
            The folder's path.
        """
        from ..output.provenance import save_selection, selection_metadata

        if getattr(self, "_last", None) is None:
            raise InputError("Nothing to save yet: call select(pool, targets, ...) first, then save(output_dir).")
        pool, targets, selected = self._last
        scores = {name: self.scores_[name] for name in selected}
        metadata = selection_metadata(
            pool,
            targets,
            selected,
            scores,
            self.method,
            self.settings(),
            source_column,
            pool_spec,
            sampled=self.samples,
            policy=getattr(self, "policy_", None),
        )
        return save_selection(output_dir, selected, scores, metadata)
