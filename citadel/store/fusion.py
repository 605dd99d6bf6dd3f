"""Fusing a dense and a lexical ranking of the same query into one.

Two ways, a setting: ``rrf`` (reciprocal rank fusion: each list adds weight / (k + rank)), and
``convex`` (each list's scores scaled to 0..1 by its own best and worst candidate, then a weighted
sum). Both take the legs' weights; a point one leg did not return gains nothing from it. On BEIR's
SciFact the convex sum measured best (docs/benchmarks.md, "Search quality").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from citadel.settings import SearchMode

Fusion = Literal["rrf", "convex"]
Ranked = Sequence[tuple[str, float]]  # (point id, score), best first


@dataclass(frozen=True)
class SearchOptions:
    """How a search ranks: its mode and, for hybrid, how the legs are fused (settings, measured defaults)."""

    mode: SearchMode = "hybrid"
    fusion: Fusion = "convex"
    dense_weight: float = 0.3  # the lexical leg weighs 1 - dense_weight
    candidates: int = 100  # points each leg brings to the fusion, at least
    rrf_k: int = 60


def reciprocal_rank(legs: Sequence[Ranked], weights: Sequence[float], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion, each leg weighted."""
    fused: dict[str, float] = {}
    for leg, weight in zip(legs, weights, strict=True):
        for rank, (pid, _) in enumerate(leg):
            fused[pid] = fused.get(pid, 0.0) + weight / (k + rank + 1)
    return sorted(fused.items(), key=lambda item: -item[1])


def convex(legs: Sequence[Ranked], weights: Sequence[float]) -> list[tuple[str, float]]:
    """A weighted sum of min-max-normalised scores (a leg of one candidate scores it 1)."""
    fused: dict[str, float] = {}
    for leg, weight in zip(legs, weights, strict=True):
        if not leg:
            continue
        scores = [score for _, score in leg]
        low, high = min(scores), max(scores)
        for pid, score in leg:
            scaled = (score - low) / (high - low) if high > low else 1.0
            fused[pid] = fused.get(pid, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda item: -item[1])


def fuse(method: Fusion, legs: Sequence[Ranked], weights: Sequence[float], rrf_k: int = 60) -> list[tuple[str, float]]:
    """The legs' candidates in one ranking, best first, by ``method``."""
    return reciprocal_rank(legs, weights, rrf_k) if method == "rrf" else convex(legs, weights)
