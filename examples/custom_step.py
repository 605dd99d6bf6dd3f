"""A new step type in Python: register it, then use it from any YAML or JSON workflow.

    CITADEL_STEP_MODULES=examples.custom_step citadel workflow run examples/workflows/word_count.yaml --local --wait

(Step types live in modules that ``CITADEL_STEP_MODULES=examples.custom_step`` names.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from citadel.workflows import StepContext, step_type


class WordCountParams(BaseModel):
    """Parameters of the ``word_count`` step: the texts and how many top words to return."""

    texts: list[str]
    top: int = Field(5, gt=0)


@step_type("word_count", params=WordCountParams, outputs=["total", "top"], cacheable=True,
           description="Count the most frequent words of texts.")
async def word_count(params: WordCountParams, ctx: StepContext) -> dict[str, Any]:
    counts = Counter(word.lower() for text in params.texts for word in text.split())
    return {"total": sum(counts.values()), "top": counts.most_common(params.top)}
