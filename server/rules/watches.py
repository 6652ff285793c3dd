"""Does a rule's condition hold? Judged point by point for metrics, on the run's row for the rest.

A `MetricWatch` follows one metric of one run in step order (an epoch metric's
step is its epoch) and says after each point whether the condition holds, and
why (`Observation`). `run_observation` judges `status` and `silent` conditions.

Example:
    >>> from callboard.server.rules.spec import PlateauCondition
    >>> watch = MetricWatch(PlateauCondition(kind="plateau", metric="loss", patience=2))
    >>> [watch.feed(epoch, epoch, loss) is not None for epoch, loss in enumerate([3, 2, 2.5, 2.1])]
    [False, False, False, True]
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


class MetricWatch:
    """Follows one metric of one run; `feed` says whether the condition holds after a point."""

    def __init__(self, condition):
        self.condition = condition
        self.best = None
        self.since_best = 0

    def feed(self, step, epoch, value, others=()):
        """The `Observation` when the condition holds after this point, else None.

        `value` None is NaN (as stored). `others` are the values of the project's other runs
        at this step (only `worse_than_median` reads them).
        """
        value = math.nan if value is None else value
        judge = getattr(self, f"_{self.condition.kind}")
        return judge(step, epoch, value, others)

    def _observed(self, message, step, epoch, value):
        metric = self.condition.metric
        return Observation(f"{metric} {message} at {_where(step, epoch)}", metric, value, epoch)

    def _nan(self, step, epoch, value, _others):
        if math.isfinite(value):
            return None
        return self._observed(f"is {_shown(value)}", step, epoch, value)

    def _above(self, step, epoch, value, _others):
        if not value > self.condition.value:  # NaN is not above anything
            return None
        return self._observed(
            f"is {_shown(value)}, above {_shown(self.condition.value)},", step, epoch, value
        )

    def _below(self, step, epoch, value, _others):
        if not value < self.condition.value:
            return None
        return self._observed(
            f"is {_shown(value)}, below {_shown(self.condition.value)},", step, epoch, value
        )

    def _plateau(self, step, epoch, value, _others):
        """Keras' EarlyStopping: an improvement is by more than `min_delta`; NaN never is."""
        condition = self.condition
        delta = condition.min_delta if condition.mode == "min" else -condition.min_delta
        first = self.best is None and not math.isnan(value)
        if first or (self.best is not None and is_worse(self.best, value + delta, condition.mode)):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        if self.since_best < condition.patience:
            return None
        best = "none yet" if self.best is None else _shown(self.best)
        return self._observed(
            f"has not improved by more than {_shown(condition.min_delta)} "
            f"for {self.since_best} epochs (best {best})",
            step,
            epoch,
            value,
        )

    def _worse_than_median(self, step, epoch, value, others):
        condition = self.condition
        reached = epoch if epoch is not None else step
        if reached < condition.warmup or len(others) < condition.min_runs:
            return None
        worst = math.inf if condition.mode == "min" else -math.inf
        median = statistics.median(worst if other is None else other for other in others)
        if not is_worse(value, median, condition.mode):
            return None
        return self._observed(
            f"is {_shown(value)}, worse than the median {_shown(median)} "
            f"of {len(others)} other runs,",
            step,
            epoch,
            value,
        )


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
