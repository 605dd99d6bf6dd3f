"""Schemathesis hooks for tests/api/test_openapi_contract.py (loaded through SCHEMATHESIS_HOOKS).

Which models are served and which collections exist is configuration and data, not part of the
document: a generated body that names some other valid model or collection is pointed at the served
model and at a collection the test made, so those requests reach search and embedding instead of
stopping at 400 "not served here" / 404 "no such collection". Anything invalid is left as generated.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

COLLECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    body = case.body
    if not isinstance(body, dict):
        return case
    path = case.operation.path
    if path.endswith(("/embeddings/generate", "/embeddings/batch")):
        model = body.get("model")
        if isinstance(model, str) and len(model) <= 255:
            body["model"] = os.environ["CITADEL_CONTRACT_MODEL"]
    elif path.endswith("/search"):
        collection = body.get("collection")
        if isinstance(collection, str) and COLLECTION.fullmatch(collection):
            body["collection"] = os.environ["CITADEL_CONTRACT_COLLECTION"]
    return case
