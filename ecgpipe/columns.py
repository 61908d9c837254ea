"""NumPy arrays as fields of the typed results (``ecgpipe.results``): a column in memory, a (nested) list in JSON."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import PlainSerializer, PlainValidator


def _column(dtype, ndim: int = 1):
    """A numpy array in memory, a (nested) list in JSON: a protocol's outcomes per subject and per record are columns,
    not one object per subject or record (300 000 records: 785 MiB per row and protocol as objects, ~7.7 GiB for five
    rows and two protocols in the flow process; as columns 84 MiB, mostly the names: ``bench_outcomes.py``)."""
    def validate(value):
        array = np.asarray(value, dtype=dtype)
        if array.size == 0:
            return array.reshape((0,) * ndim)
        if array.ndim != ndim:
            raise ValueError(f"expected a {ndim}-dimensional column, got shape {array.shape}")
        return array

    return Annotated[np.ndarray, PlainValidator(validate), PlainSerializer(lambda a: a.tolist())]


def _fold_sets(value) -> np.ndarray:
    """Each record's outer folds (a list per record in JSON) as an (n, widest) matrix padded with -1."""
    if isinstance(value, np.ndarray):
        return value.astype(np.int16).reshape(len(value), -1 if value.size else 0)
    width = max((len(f) for f in value), default=0)
    out = np.full((len(value), width), -1, dtype=np.int16)
    for k, folds in enumerate(value):
        out[k, :len(folds)] = folds
    return out


def fold_lists(folds: np.ndarray) -> list[list[int]]:
    return [[int(f) for f in row if f >= 0] for row in folds]


StrColumn = _column(object)
IntColumn = _column(np.int64)
CountMatrix = _column(np.int64, 2)
FloatMatrix = _column(np.float64, 2)
FoldSets = Annotated[np.ndarray, PlainValidator(_fold_sets),
                     PlainSerializer(fold_lists)]
