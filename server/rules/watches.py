"""Does a rule's condition hold? Judged point by point for metrics, on the run's row for the rest.

A `MetricWatch` follows one metric of one run in step order (an epoch metric's
step is its epoch) and says which points begin an episode of the condition, and
why (`Observation`). `run_observation` judges `status` and `silent` conditions.

Example:
    >>> from callboard.server.rules.spec import PlateauCondition
    >>> watch = MetricWatch(PlateauCondition(kind="plateau", metric="loss", patience=2))
    >>> fired, active = watch.judge([(0, 0, 3.0), (1, 1, 2.0), (2, 2, 2.5), (3, 3, 2.1)], False)
    >>> [observation.message for observation in fired], active
    (['loss has not improved by more than 0 for 2 epochs (best 2) at epoch 3'], True)
"""

import math
import statistics
from dataclasses import dataclass

from callboard.server.store.models import LIVE_STATUSES


@dataclass(frozen=True)
class Observation:
    """What made a condition hold on a run: a sentence, and the metric's value where it held."""

    message: str
    metric: str | None = None
    value: float | None = None
    epoch: int | None = None


def _shown(value):
    """A value as a sentence names it: NaN, Infinity, or a short number."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.6g}"


def _where(step, epoch):
    return f"epoch {epoch}" if epoch is not None else f"step {step}"


def is_worse(value, than, mode):
    """True when `value` is worse than `than` for a metric of `mode` (`min`: lower is better);
    NaN is worse than any number, and no better than another NaN."""
    if math.isnan(value):
        return not math.isnan(than)
    if math.isnan(than):
        return False
    return value > than if mode == "min" else value < than


INFINITIES = (math.inf, -math.inf)


def _threshold_test(condition):
    """Whether a stored value (None: NaN) makes a `nan`, `above` or `below` condition hold."""
    if condition.kind == "nan":
        return lambda value: value is None or value != value or value in INFINITIES
    limit = condition.value
    if condition.kind == "above":
        return lambda value: value is not None and value > limit  # NaN is above nothing
    return lambda value: value is not None and value < limit


class MetricWatch:
    """Follows one metric of one run, point by point in step order (an epoch metric's step is
    its epoch): `judge` says which points begin an episode of the condition."""

    def __init__(self, condition):
        self.condition = condition
        self.best = None
        self.since_best = 0
        if condition.kind in ("nan", "above", "below"):
            self._holds = _threshold_test(condition)

    def warm(self, points):
        """Take in points judged before (by an earlier process): only a plateau remembers."""
        if self.condition.kind == "plateau":
            for _step, _epoch, value in points:
                self._plateaued(value)

    def judge(self, points, active, others_at=None):
        """`(observations, active)`: an `Observation` for each point of `points` where an
        episode begins (the condition holds, and did not just before), and whether it holds
        after the last. `active`: whether it held before the first.

        `others_at(step)` gives the project's other runs' values at a step (None: NaN):
        `worse_than_median` judges the latest point against them.
        """
        kind = self.condition.kind
        if kind == "worse_than_median":
            step, epoch, value = points[-1]
            observation = self._worse_than_median(step, epoch, value, others_at(step))
            fired = [observation] if observation is not None and not active else []
            return fired, observation is not None
        holds = self._plateaued if kind == "plateau" else self._holds
        fired = []
        for step, epoch, value in points:
            if holds(value) != active:
                active = not active
                if active:
                    fired.append(self._observed(step, epoch, value))
        return fired, active

    def _observed(self, step, epoch, value):
        value = math.nan if value is None else value
        condition = self.condition
        if condition.kind == "nan":
            words = f"is {_shown(value)}"
        elif condition.kind == "plateau":
            words = (
                f"has not improved by more than {_shown(condition.min_delta)} "
                f"for {self.since_best} epochs (best {_shown_best(self.best)})"
            )
        else:
            words = f"is {_shown(value)}, {condition.kind} {_shown(condition.value)},"
        return self._observation(words, step, epoch, value)

    def _observation(self, words, step, epoch, value):
        metric = self.condition.metric
        return Observation(f"{metric} {words} at {_where(step, epoch)}", metric, value, epoch)

    def _plateaued(self, value):
        """Keras' EarlyStopping: an improvement is by more than `min_delta`; NaN never is.
        True once `patience` points in a row brought none."""
        condition = self.condition
        value = math.nan if value is None else value
        delta = condition.min_delta if condition.mode == "min" else -condition.min_delta
        first = self.best is None and not math.isnan(value)
        if first or (self.best is not None and is_worse(self.best, value + delta, condition.mode)):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return self.since_best >= condition.patience

    def _worse_than_median(self, step, epoch, value, others):
        condition = self.condition
        value = math.nan if value is None else value
        reached = epoch if epoch is not None else step
        if reached < condition.warmup or len(others) < condition.min_runs:
            return None
        worst = math.inf if condition.mode == "min" else -math.inf
        median = statistics.median(worst if other is None else other for other in others)
        if not is_worse(value, median, condition.mode):
            return None
        words = (
            f"is {_shown(value)}, worse than the median {_shown(median)} "
            f"of {len(others)} other runs,"
        )
        return self._observation(words, step, epoch, value)


def _shown_best(best):
    return "none yet" if best is None else _shown(best)


def run_observation(condition, run, now):
    """The `Observation` when a `status` or `silent` condition holds on `run` (a row with
    `status`, `last_event_at`, `created_at`), else None."""
    if condition.kind == "status":
        return Observation(f"the run is {run.status}") if run.status == condition.status else None
    if run.status not in LIVE_STATUSES:
        return None
    quiet = now - (run.last_event_at or run.created_at)
    if quiet < condition.seconds:
        return None
    return Observation(f"no event for {quiet:.0f} s (the rule allows {condition.seconds:g} s)")
