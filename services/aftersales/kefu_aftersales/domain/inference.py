"""What an after-sales inquiry's text tells about the request: its kind and reason, by keywords
(``data/inference.json``). A guess for the agent who completes the case, never a decision: the
policy only reviews a case once an agent has confirmed the order lines, kind and reason."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_shared.contracts.aftersales import CaseKind, RequestReason


@dataclass(frozen=True)
class Inference:
    kind: CaseKind
    reason: RequestReason | None


@dataclass(frozen=True)
class RequestInferrer:
    default_kind: CaseKind
    kinds: tuple[tuple[CaseKind, tuple[str, ...]], ...]
    reasons: tuple[tuple[RequestReason, tuple[str, ...]], ...]

    def infer(self, text: str) -> Inference:
        lowered = text.lower()
        kind = next((k for k, words in self.kinds if _hit(lowered, words)), self.default_kind)
        reason = next((r for r, words in self.reasons if _hit(lowered, words)), None)
        return Inference(kind, reason)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RequestInferrer:
        return cls(
            default_kind=CaseKind(data.get("default_kind", "return")),
            kinds=tuple(
                (CaseKind(e["kind"]), tuple(w.lower() for w in e["keywords"]))
                for e in data["kinds"]
            ),
            reasons=tuple(
                (RequestReason(e["reason"]), tuple(w.lower() for w in e["keywords"]))
                for e in data["reasons"]
            ),
        )


def _hit(text: str, words: tuple[str, ...]) -> bool:
    return any(word in text for word in words)


def load_inferrer(path: str | Path | None = None) -> RequestInferrer:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("kefu_aftersales").joinpath("data/inference.json").read_text("utf-8")
    return RequestInferrer.from_data(json.loads(text))
