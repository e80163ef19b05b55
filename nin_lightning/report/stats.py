"""Is a setting's difference to the baseline real? The difference of the means over seeds, its 95 %
confidence interval and Welch's t-test p-value (scipy.stats.ttest_ind, equal_var=False: the settings'
seed-to-seed spreads need not be equal)."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
MIN_SEEDS = 2  # a t-test needs a spread on both sides: two completed seeds each, at the least
FEW_SEEDS = 3  # below this per side the interval is so wide that "no difference" says little


@dataclass(frozen=True)
class Difference:
    """mean(setting) - mean(baseline) over seeds, with its CI and p-value (None: too few seeds to say)."""

    diff: float | None
    low: float | None = None
    high: float | None = None
    p: float | None = None
    note: str = ""  # why there is no CI or p-value, or why to read them with care

    @property
    def tested(self) -> bool:
        return self.p is not None


def welch(values: Sequence[float], baseline: Sequence[float]) -> Difference:
    """VALUES (one per seed) against BASELINE's: Welch's t-test and the 95 % CI of the difference."""
    if not values or not baseline:
        return Difference(None, note="no completed seed")
    diff = statistics.fmean(values) - statistics.fmean(baseline)
    if min(len(values), len(baseline)) < MIN_SEEDS:
        return Difference(diff, note=f"too few seeds to say (n={len(values)} vs {len(baseline)}; "
                                     f"need {MIN_SEEDS} each)")
    if statistics.pvariance(values) == 0 and statistics.pvariance(baseline) == 0:
        return Difference(diff, note="no seed-to-seed spread on either side")
    from scipy import stats

    with warnings.catch_warnings():  # nearly identical values: scipy warns, the result is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(values, baseline, equal_var=False)
        interval = result.confidence_interval(CONFIDENCE)
    p, low, high = float(result.pvalue), float(interval.low), float(interval.high)
    if not all(map(math.isfinite, (p, low, high))):
        return Difference(diff, note="the t-test is undefined for these values")
    note = f"few seeds (n={len(values)} vs {len(baseline)})" if min(len(values), len(baseline)) < FEW_SEEDS else ""
    return Difference(diff, low, high, p, note)
