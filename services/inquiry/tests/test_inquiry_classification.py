"""Classification accuracy on the labelled set (written from the domain before the rules)."""

from collections import Counter

from inquiry_testkit import labelled
from kefu_inquiry.domain.rules_loader import default_classifier


def _accuracy(rows: list[dict[str, str]]) -> tuple[float, list[str]]:
    classifier = default_classifier()
    misses = []
    for row in rows:
        got = classifier.classify(row["text"])
        if got.category.value != row["category"]:
            misses.append(f"{row['category']} -> {got.category.value}: {row['text']}")
    return 1 - len(misses) / len(rows), misses


def test_the_labelled_set_covers_both_languages_and_every_category() -> None:
    rows = labelled("labelled_messages.jsonl")
    assert len(rows) >= 200
    languages = Counter(r["language"] for r in rows)
    assert abs(languages["zh"] - languages["en"]) <= len(rows) * 0.1
    assert set(Counter(r["category"] for r in rows)) == {
        "product",
        "order",
        "payment",
        "logistics",
        "after_sales",
        "complaint",
        "spam",
    }


def test_accuracy_on_the_labelled_set_is_at_least_90_percent() -> None:
    rows = labelled("labelled_messages.jsonl")
    accuracy, misses = _accuracy(rows)
    print(f"\nclassification accuracy: {accuracy:.3f} on {len(rows)} labelled messages")
    for miss in misses:
        print("  miss:", miss)
    for language in ("zh", "en"):
        part, _ = _accuracy([r for r in rows if r["language"] == language])
        print(f"  {language}: {part:.3f}")
    assert accuracy >= 0.90


def test_accuracy_on_held_out_phrasings() -> None:
    # Written after the first rules. First measured at 0.62 (the lexicon was too narrow); the
    # lexicon was then broadened with general vocabulary, so this set is no longer blind.
    rows = labelled("holdout_messages.jsonl")
    accuracy, misses = _accuracy(rows)
    print(f"\nheld-out accuracy: {accuracy:.3f} on {len(rows)} messages")
    for miss in misses:
        print("  miss:", miss)
    assert accuracy >= 0.8


def test_an_unclear_message_goes_to_a_human_with_low_confidence() -> None:
    got = default_classifier().classify("你好，在吗？")
    assert got.needs_human
    assert got.confidence < 0.5


def test_accuracy_on_a_blind_set_written_without_looking_at_the_rules() -> None:
    # 40 messages (20 zh, 20 en) written by another engineer from the domain alone, after the
    # rules were frozen; never used to tune them. The floor guards regressions; the printed
    # figure is the honest estimate reported in the issue.
    rows = labelled("blind_messages.jsonl")
    accuracy, misses = _accuracy(rows)
    print(f"\nblind accuracy: {accuracy:.3f} on {len(rows)} messages")
    for miss in misses:
        print("  miss:", miss)
    assert accuracy >= 0.6
