"""The 16 image groups and the per-group top / bottom sets (spec 02 §3.3–§3.4, 02a M10, M12).

A sample's group name has one letter per group property (hair_color, hair_length,
background_mean, hairstyle): ``h`` when its score is ≥ that property's median (ties → ``h``),
else ``l``. Within a group, the samples are ranked by one controlled property with a *stable*
descending sort (ties keep sampling order); the first k are "largest", the last k "smallest",
k = max(floor(ratio · group size), 1).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from .protocols import GROUP_PROPERTIES

GROUP_ORDER = tuple("".join(t) for t in itertools.product("hl", repeat=len(GROUP_PROPERTIES)))
DEFAULT_RATIO = 0.2
# Column names of the original's median file (background_mean is called background_score there).
MEDIAN_FILE_COLUMNS = {"hair_color": "hair_color", "hair_length": "hair_length",
                       "background_mean": "background_score", "hairstyle": "hairstyle"}


@dataclass(frozen=True)
class Medians:
    hair_color: float
    hair_length: float
    background_mean: float
    hairstyle: float

    def as_dict(self) -> dict[str, float]:
        return {p: float(getattr(self, p)) for p in GROUP_PROPERTIES}

    @classmethod
    def from_scores(cls, scores: Mapping[str, np.ndarray]) -> "Medians":
        """The original's rule (02a M10): scores rounded to 4 dp, median, rounded to 4 dp."""
        return cls(**{p: round(float(np.median(np.round(np.asarray(scores[p], dtype=np.float64), 4))), 4)
                      for p in GROUP_PROPERTIES})

    @classmethod
    def from_table(cls, df: pd.DataFrame) -> "Medians":
        """Read the original's ``property_scores_mean_and_median.csv`` (columns ``value_type,
        hair_color, hair_length, background_score, hairstyle``; the median is row index 1)."""
        missing = [c for c in MEDIAN_FILE_COLUMNS.values() if c not in df.columns]
        if missing or len(df) < 2:
            raise ValueError(f"median table needs columns {list(MEDIAN_FILE_COLUMNS.values())} and 2 rows "
                             f"(mean, median); got columns {list(df.columns)}, {len(df)} rows")
        row = df.iloc[1]
        return cls(**{p: float(row[c]) for p, c in MEDIAN_FILE_COLUMNS.items()})

    def to_table(self, means: Mapping[str, float] | None = None) -> pd.DataFrame:
        """The original's median file layout (rows ``mean`` then ``median``)."""
        means = means or {p: float("nan") for p in GROUP_PROPERTIES}
        rows = [["mean"] + [means[p] for p in GROUP_PROPERTIES], ["median"] + [self.as_dict()[p] for p in GROUP_PROPERTIES]]
        return pd.DataFrame(rows, columns=["value_type"] + [MEDIAN_FILE_COLUMNS[p] for p in GROUP_PROPERTIES])


# The v9 medians of the original (spec 02 §3.3), computed from 20,000 FineTune-v9 images.
V9_MEDIANS = Medians(hair_color=-0.4315, hair_length=0.5685, background_mean=0.6753, hairstyle=0.0372)


def group_names(scores: Mapping[str, np.ndarray], medians: Medians) -> np.ndarray:
    """Group name per sample (array of 4-letter strings)."""
    med = medians.as_dict()
    letters = [np.where(np.asarray(scores[p]) >= med[p], "h", "l") for p in GROUP_PROPERTIES]
    return np.array(["".join(t) for t in zip(*letters)], dtype=object) if len(letters[0]) else np.array([], dtype=object)


def group_counts(names: np.ndarray) -> dict[str, int]:
    """Samples per group, in :data:`GROUP_ORDER` (groups with no sample count 0)."""
    vals, counts = np.unique(np.asarray(names, dtype=str), return_counts=True)
    found = dict(zip(vals.tolist(), counts.tolist()))
    return {g: int(found.get(g, 0)) for g in GROUP_ORDER}


def top_k(group_size: int, ratio: float = DEFAULT_RATIO) -> int:
    return max(int(math.floor(ratio * group_size)), 1)


def top_bottom(indices: np.ndarray, values: np.ndarray, ratio: float = DEFAULT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices of the "largest" and "smallest" sets of one group for one property.

    ``indices`` are the group's sample indices in sampling order, ``values`` the property's score
    of every sample (indexed by sample). Both returned arrays are sorted ascending (the original
    re-sorts them before shuffling). A 1-member group gives that sample in both sets."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("empty group: no top / bottom sets")
    k = top_k(len(indices), ratio)
    order = np.argsort(-np.asarray(values, dtype=np.float64)[indices], kind="stable")   # descending, ties keep order
    ranked = indices[order]
    return np.sort(ranked[:k]), np.sort(ranked[-k:])


def nominal_k(n: int, ratio: float = DEFAULT_RATIO) -> int:
    """The k the original reports in its aggregate logs: int(round(n · ratio)) (02a M25)."""
    return int(round(n * ratio))
