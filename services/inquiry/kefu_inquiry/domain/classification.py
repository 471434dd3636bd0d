"""Rule-based classification of a customer message, with the rules as data.

Why rules and not a model: the shop's agents maintain the lexicon themselves (a JSON file), each
decision can be explained (the matched terms), and it runs in microseconds on every channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kefu_shared.contracts.inquiry import Category

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str, declared: str | None = None) -> str:
    """The channel's declared language wins; else Chinese if CJK characters dominate."""
    if declared:
        return declared.split("-", 1)[0].lower()
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    return "zh" if cjk and cjk >= latin_words else "en"


@dataclass(frozen=True)
class Classification:
    category: Category
    confidence: float
    language: str
    needs_human: bool
    matched: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Term:
    text: str
    weight: float
    regex: re.Pattern[str] | None  # English: word-prefix match; Chinese: plain substring


@dataclass(frozen=True)
class _Pattern:
    category: Category
    regex: re.Pattern[str]
    weight: float


@dataclass
class Classifier:
    """Scores each category by the weights of its matching terms and patterns."""

    terms: dict[Category, dict[str, list[_Term]]]
    patterns: list[_Pattern]
    prior: float = 1.0
    fallback: Category = Category.PRODUCT
    human_threshold: float = 0.5
    version: int = 1
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rules(cls, rules: Mapping[str, Any]) -> Classifier:
        """Build from the rules document; a malformed document fails here, at start-up."""
        terms: dict[Category, dict[str, list[_Term]]] = {}
        for name, by_language in rules["categories"].items():
            category = Category(name)
            terms[category] = {}
            for language, lexicon in by_language.items():
                terms[category][language] = [
                    _Term(t.lower(), float(w), _word_regex(t) if language != "zh" else None)
                    for t, w in lexicon.items()
                ]
        patterns = [
            _Pattern(Category(p["category"]), re.compile(p["regex"]), float(p["weight"]))
            for p in rules.get("patterns", ())
        ]
        return cls(
            terms=terms,
            patterns=patterns,
            prior=float(rules.get("prior", 1.0)),
            fallback=Category(rules.get("fallback_category", "product")),
            human_threshold=float(rules.get("human_threshold", 0.5)),
            version=int(rules.get("version", 1)),
        )

    def scores(self, text: str, language: str) -> tuple[dict[Category, float], list[str]]:
        lowered = text.lower()
        scores = dict.fromkeys(self.terms, 0.0)
        matched: list[str] = []
        # Lexicons of both languages apply: "订单 order 123" or an English brand in Chinese text.
        for category, by_language in self.terms.items():
            for lang, terms in by_language.items():
                for term in terms:
                    hit = term.regex.search(lowered) if term.regex else term.text in lowered
                    if hit:
                        # The message's own language counts fully, the other one half.
                        factor = 1.0 if lang == language else 0.5
                        scores[category] += term.weight * factor
                        matched.append(f"{category.value}:{term.text}")
        for pattern in self.patterns:
            if pattern.regex.search(text):
                scores[pattern.category] += pattern.weight
                matched.append(f"{pattern.category.value}:/{pattern.regex.pattern}/")
        return scores, matched

    def classify(self, text: str, declared_language: str | None = None) -> Classification:
        language = detect_language(text, declared_language)
        scores, matched = self.scores(text, language)
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        top_category, top = ranked[0]
        if top <= 0:
            return Classification(self.fallback, 0.0, language, True, ())
        confidence = round(top / (sum(scores.values()) + self.prior), 3)
        return Classification(
            top_category,
            confidence,
            language,
            needs_human=confidence < self.human_threshold,
            matched=tuple(matched),
        )


def _word_regex(term: str) -> re.Pattern[str]:
    # Prefix match at a word start: "refund" also finds "refunded", "ship" finds "shipping".
    return re.compile(r"(?<![a-z0-9])" + re.escape(term.lower()))
