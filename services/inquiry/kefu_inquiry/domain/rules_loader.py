"""Loading the packaged classification rules (data files next to the code)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_inquiry.domain.classification import Classifier


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = (
            resources.files("kefu_inquiry")
            .joinpath("data/classification_rules.json")
            .read_text(encoding="utf-8")
        )
    rules: dict[str, Any] = json.loads(text)
    return rules


def default_classifier(path: str | Path | None = None) -> Classifier:
    return Classifier.from_rules(load_rules(path))
