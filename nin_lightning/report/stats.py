"""Is a setting's difference to the baseline real? Welch's and the paired t-test, seeds for 80 % power."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
MIN_SEEDS = 2  # a t-test needs a spread on both sides: two completed seeds each, at the least
FEW_SEEDS = 3  # below this per side the interval is so wide that "no difference" says little
ALPHA, POWER = 0.05, 0.80  # seeds_needed: a two-sided test at level ALPHA finds the difference with this power
MAX_SEEDS = 1000  # seeds_needed says "more than this" rather than search further


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
    note = f"few seeds (n={len(values)} vs {len(baseline)})" if min(len(values), len(baseline)) < FEW_SEEDS else ""
    return _tested(diff, "ttest_ind", (values, baseline), {"equal_var": False}, "the t-test", note)


def _tested(diff: float, test: str, samples: tuple[Sequence[float], Sequence[float]], options: dict[str, bool],
            name: str, note: str) -> Difference:
    """DIFF with the CI and p-value of scipy.stats.TEST (ttest_ind or ttest_rel) on SAMPLES."""
    from scipy import stats

    with warnings.catch_warnings():  # nearly identical values: scipy warns, the result is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        result = getattr(stats, test)(*samples, **options)
        interval = result.confidence_interval(CONFIDENCE)
    p, low, high = float(result.pvalue), float(interval.low), float(interval.high)
    if not all(map(math.isfinite, (p, low, high))):
        return Difference(diff, note=f"{name} is undefined for these values")
    return Difference(diff, low, high, p, note)


def paired(values: dict[str, float], baseline: dict[str, float]) -> Difference:
    """VALUES against BASELINE's ({seed: value}): paired t-test over the shared seeds, 95 % CI; blank below 2."""
    seeds = [s for s in values if s in baseline]
    if not seeds:
        return Difference(None, note="no seed shared with the baseline")
    x, y = [values[s] for s in seeds], [baseline[s] for s in seeds]
    diff = statistics.fmean(a - b for a, b in zip(x, y, strict=True))
    if len(seeds) < MIN_SEEDS:  # one seed's difference is no paired estimate: the columns stay blank
        return Difference(None, note=f"too few shared seeds to pair (n={len(seeds)}; need {MIN_SEEDS})")
    if statistics.pvariance([a - b for a, b in zip(x, y, strict=True)]) == 0:
        return Difference(diff, note="no spread in the paired differences")
    note = f"few shared seeds (n={len(seeds)})" if len(seeds) < FEW_SEEDS else ""
    return _tested(diff, "ttest_rel", (x, y), {}, "the paired t-test", note)


def power(effect: float, n: int, paired_sd: float | None = None, sds: tuple[float, float] | None = None) -> float:
    """Power of a two-sided t-test at ALPHA for EFFECT with N seeds each: paired (PAIRED_SD) or Welch's (SDS)."""
    from scipy import stats

    if paired_sd is not None:
        se, df = paired_sd / math.sqrt(n), n - 1.0
    else:
        assert sds is not None, "give paired_sd or sds"
        v1, v2 = sds[0] ** 2 / n, sds[1] ** 2 / n
        se, df = math.sqrt(v1 + v2), (v1 + v2) ** 2 / (v1**2 / (n - 1) + v2**2 / (n - 1))
    ncp, crit = abs(effect) / se, float(stats.t.ppf(1 - ALPHA / 2, df))
    # scipy's nct returns NaN far in a tail (e.g. cdf(-2.78, 4, 13.7)): there the tail's mass is ~0, or ~1 for
    # the upper tail when the noncentrality is far above the critical value
    upper, lower = float(stats.nct.sf(crit, df, ncp)), float(stats.nct.cdf(-crit, df, ncp))
    upper = upper if math.isfinite(upper) else float(ncp > crit)
    return upper + (lower if math.isfinite(lower) else 0.0)


def seeds_needed(effect: float, paired_sd: float | None = None, sds: tuple[float, float] | None = None) -> int | None:
    """The fewest seeds per setting (>= 2) for `power` >= POWER; None above MAX_SEEDS, without an effect or spread."""
    spread = paired_sd if paired_sd is not None else max(sds or (0.0, 0.0))
    if not effect or not spread or not math.isfinite(effect) or not math.isfinite(spread):
        return None
    for n in range(MIN_SEEDS, MAX_SEEDS + 1):
        if power(effect, n, paired_sd, sds) >= POWER:
            return n
    return None


def seeds_for(values: dict[str, float], baseline: dict[str, float], use_paired: bool,
              min_effect: float | None = None) -> tuple[int | None, str]:
    """(seeds per setting for 80 % power, or why none) at MIN_EFFECT or the observed difference, paired or Welch's."""
    if use_paired:
        diffs = [values[s] - baseline[s] for s in values if s in baseline]
        if len(diffs) < MIN_SEEDS:
            return None, "too few shared seeds to estimate the spread"
        effect, spread = min_effect or statistics.fmean(diffs), statistics.stdev(diffs)
        n = seeds_needed(effect, paired_sd=spread)
    else:
        x, y = list(values.values()), list(baseline.values())
        if min(len(x), len(y)) < MIN_SEEDS:
            return None, "too few seeds to estimate the spread"
        effect = min_effect or statistics.fmean(x) - statistics.fmean(y)
        sds = (statistics.stdev(x), statistics.stdev(y))
        n, spread = seeds_needed(effect, sds=sds), max(sds)
    if n is not None:
        return n, ""
    if not effect:
        return None, "no difference to find (give --min-effect)"
    return None, "no seed-to-seed spread" if not spread else f"more than {MAX_SEEDS}"


def still_improving(curve: Sequence[float], fraction: float = 0.2, least: int = 2) -> bool | None:
    """Did CURVE (higher is better) reach a new best in its last FRACTION of epochs (>= LEAST)? None below 2 epochs."""
    if len(curve) < 2:
        return None
    last = min(max(least, math.ceil(fraction * len(curve))), len(curve) - 1)
    return max(curve[-last:]) > max(curve[:-last])
