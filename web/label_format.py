"""The hand-label files as stage 2 reads them: the one place ``web`` learns their format.

Everything the labelling tool knows about the files (which file holds which labels, their
default paths, how a file is read and validated) comes from :func:`stage2_label_format`, which
takes it from stage 2's own code, so the tool writes what stage 2 reads and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd


@dataclass(frozen=True)
class LabelFormat:
    groups: dict            # file group -> label columns after img_name, e.g. {"quality_and_gender": ("quality", "gender")}
    default_files: dict     # file group -> path relative to the data root
    read: Callable          # read(path, columns) -> DataFrame img_name + columns (validated, sorted by img_name)
    error: type             # the exception ``read`` raises for a missing or malformed file


def stage2_label_format() -> LabelFormat:
    """Stage 2's hand-label file format (groups, default paths, validating reader)."""
    # imported here so that ``web`` (and the fast store tests) load torch only when a file is read,
    # and so that this function is the single line to change when stage 2's reader moves
    from stages.filtering_inputs import DEFAULT_LABEL_FILES, LABEL_GROUPS, LabelFileError, read_label_file

    def read(path, columns) -> pd.DataFrame:
        return read_label_file(path, tuple(columns)).drop(columns="_row")

    return LabelFormat(groups=dict(LABEL_GROUPS), default_files=dict(DEFAULT_LABEL_FILES), read=read,
                       error=LabelFileError)
