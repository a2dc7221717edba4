"""Latency statistics in constant memory: a fixed-bin log-scale histogram of milliseconds.

An in-car unit runs for hours at 100+ frames a second, so per-frame latencies are never kept:
each one increments a bin counter. :class:`LatencyHistogram` has ``DECADES * BINS_PER_DECADE``
bins (700) spanning ``LOW_MS`` = 0.01 ms to ``HIGH_MS`` = 100 s, plus one bin below and one above,
so its size is fixed at construction whatever the number of samples (about 5.6 kB of counters).

Error bound. Bin edges grow by the ratio ``r = 10 ** (1 / BINS_PER_DECADE)`` (1.0233); a sample is
reported as its bin's geometric centre, at most a factor ``sqrt(r)`` (1.0116) from the sample.
:meth:`LatencyHistogram.percentile` follows numpy.percentile's default (linear interpolation
between the order statistics at rank ``q / 100 * (n - 1)``), with each of the two order
statistics replaced by its bin's centre, so for any data whose values lie in [LOW_MS, HIGH_MS]::

    |percentile(q) - numpy.percentile(data, q)| <= RELATIVE_ERROR * numpy.percentile(data, q)

with ``RELATIVE_ERROR = sqrt(r) - 1`` (1.17 %). Values are also clamped to the exact minimum and
maximum seen (which only moves them closer to the truth), so p0 and p100 are exact. Samples below
0.01 ms (timer noise) are reported as the smallest sample seen, above 100 s as the largest.
``count``, ``mean`` (from the exact sum), ``min`` and ``max`` are exact.
"""

from __future__ import annotations

import math

import numpy as np

LOW_MS = 0.01
HIGH_MS = 100_000.0
DECADES = 7  # log10(HIGH_MS / LOW_MS)
BINS_PER_DECADE = 100
RELATIVE_ERROR = math.sqrt(10.0 ** (1.0 / BINS_PER_DECADE)) - 1.0


class LatencyHistogram:
    """Counts of latencies (ms) in fixed log-scale bins; see the module docstring for the bound."""

    def __init__(self) -> None:
        self.bins = DECADES * BINS_PER_DECADE
        # counts[0]: below LOW_MS; counts[1..bins]: the log bins; counts[bins + 1]: HIGH_MS and above.
        self.counts = np.zeros(self.bins + 2, dtype=np.int64)
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = -math.inf

    def _index(self, value_ms: float) -> int:
        if not value_ms >= LOW_MS:
            return 0
        if value_ms >= HIGH_MS:
            return self.bins + 1
        return min(int(math.log10(value_ms / LOW_MS) * BINS_PER_DECADE), self.bins - 1) + 1

    def add(self, value_ms: float) -> None:
        """One latency, ms; NaN is ignored (no latency was measured)."""
        v = float(value_ms)
        if v != v:
            return
        self.counts[self._index(v)] += 1
        self.count += 1
        self.total_ms += v
        self.min_ms = min(self.min_ms, v)
        self.max_ms = max(self.max_ms, v)

    def add_many(self, values_ms) -> None:
        """Many latencies at once (ms, any array-like), as :meth:`add` each."""
        v = np.asarray(values_ms, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        idx = np.zeros(v.size, dtype=np.int64)
        inside = (v >= LOW_MS) & (v < HIGH_MS)
        idx[inside] = np.minimum((np.log10(v[inside] / LOW_MS) * BINS_PER_DECADE).astype(np.int64),
                                 self.bins - 1) + 1
        idx[v >= HIGH_MS] = self.bins + 1
        self.counts += np.bincount(idx, minlength=self.bins + 2)
        self.count += int(v.size)
        self.total_ms += float(v.sum())
        self.min_ms = min(self.min_ms, float(v.min()))
        self.max_ms = max(self.max_ms, float(v.max()))

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else math.nan

    def _value_at_rank(self, cumulative: np.ndarray, rank: int) -> float:
        """The reported value of the ``rank``-th smallest sample (0-based): its bin's centre."""
        i = int(np.searchsorted(cumulative, rank, side="right"))
        if i == 0:
            return self.min_ms
        if i == self.bins + 1:
            return self.max_ms
        centre = LOW_MS * 10.0 ** ((i - 0.5) / BINS_PER_DECADE)
        return min(max(centre, self.min_ms), self.max_ms)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100), ms, within RELATIVE_ERROR of numpy.percentile; NaN when empty."""
        if self.count == 0:
            return math.nan
        position = min(max(q, 0.0), 100.0) / 100.0 * (self.count - 1)
        below = math.floor(position)
        cumulative = np.cumsum(self.counts)
        low = self._value_at_rank(cumulative, below)
        if position == below:
            return low
        high = self._value_at_rank(cumulative, min(below + 1, self.count - 1))
        return low + (position - below) * (high - low)

    def summary(self) -> dict[str, float]:
        """p50, p95, mean and max (ms) and ``n`` samples."""
        return {"p50": self.percentile(50), "p95": self.percentile(95), "mean": self.mean_ms,
                "max": self.max_ms if self.count else math.nan, "n": self.count}
