"""Amortized growth of the per-point arrays of qdrant-client's embedded collections.

Embedded mode adds a point with ``np.append(mask, 0)`` on its deleted-points masks, which copies
the whole mask every time: a collection of n points costs O(n²) to fill (at 600,000 points the
Qdrant REST test server spent most of its CPU there). A real Qdrant server has no such cost, so
the test server's own process swaps the ``np`` that module sees for one whose ``append`` of a
single value to a 1-D array writes into spare room at the end of a doubling buffer. The result is
the same array (values and dtype) ``np.append`` gives; only the copies are gone.
"""

from __future__ import annotations

import types
import weakref
from typing import Any

import numpy as np


class _GrowingNumpy(types.ModuleType):
    """``numpy`` with an ``append`` that grows a buffer by doubling."""

    def __init__(self) -> None:
        super().__init__("numpy")
        # id of a buffer -> (the buffer, how much of it its newest view shows)
        self._used: dict[int, tuple[weakref.ref[np.ndarray], int]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def append(self, arr: Any, values: Any, axis: int | None = None) -> Any:
        value = np.asarray(values)
        if axis is not None or not isinstance(arr, np.ndarray) or arr.ndim != 1 or value.ndim != 0:
            return np.append(arr, values, axis=axis)
        size, dtype = len(arr), np.result_type(arr.dtype, value.dtype)  # np.append's (a bool mask and 0 give int64)
        entry = self._used.get(id(arr.base))
        held = entry[0]() if entry is not None and entry[1] == size else None
        # In place only at the end of the newest view of one of these buffers: an older view keeps its length.
        if (held is not None and held is arr.base and held.dtype == dtype and len(held) > size
                and arr.ctypes.data == held.ctypes.data and arr.strides == held.strides):
            buffer = held
            buffer[size] = value
        else:
            buffer = np.empty(max(16, 2 * (size + 1)), dtype=dtype)
            buffer[:size] = arr
            buffer[size] = value
        self._remember(buffer, size + 1)
        return buffer[: size + 1]

    def _remember(self, buffer: np.ndarray, used: int) -> None:
        if len(self._used) > 4096:  # forget the buffers no view holds any more
            self._used = {key: entry for key, entry in self._used.items() if entry[0]() is not None}
        self._used[id(buffer)] = (weakref.ref(buffer), used)


def install() -> None:
    """Give qdrant-client's embedded collections the growing ``append`` (this process only)."""
    from qdrant_client.local import local_collection

    local_collection.np = _GrowingNumpy()  # type: ignore[attr-defined]
