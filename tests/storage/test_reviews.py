"""Operating points from verdicts (Wilson lower bound, sample size) and verdict sets dominated by one account.

Hand-made cases whose answers follow from the formulas, then the same through a real SQLite database.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trustcam.events.model import Event
from trustcam.storage.database import open_database
from trustcam.storage.event_store import EventStore
from trustcam.storage.reviews import (
    Reviews,
    Verdict,
    calibrate,
    dominating_account,
    operating_point,
    wilson,
)

Z2 = 1.96**2


def perfect_lower(n: int) -> float:
    """Wilson lower bound of n successes in n: n / (n + z²)."""
    return n / (n + Z2)


def test_a_perfect_record_needs_73_verdicts_for_95_percent() -> None:
    assert perfect_lower(73) >= 0.95 > perfect_lower(72)  # the arithmetic the test relies on
    scores = [0.9 - 0.001 * i for i in range(73)]
    assert not operating_point(scores[:72], [True] * 72, 0.95).reached
    point = operating_point(scores, [True] * 73, 0.95)
    assert point.reached and point.kept == 73 and point.lower_bound == pytest.approx(perfect_lower(73))
    # observed precision 100% on 20: not enough, and it says how many more
    few = operating_point(scores[:20], [True] * 20, 0.95)
    assert not few.reached and few.needed == 53 and few.precision == 1.0
    assert "about 53 more needed" in few.explain()
    empty = operating_point([], [], 0.95)
    assert empty.needed == 73 and "no verdicts yet" in empty.explain()


def test_lowest_threshold_and_the_value_to_configure() -> None:
    # 50 true positives scoring 0.50..0.99 above 30 false positives scoring 0.20..0.49
    scores = [round(0.20 + 0.01 * i, 2) for i in range(80)]
    hits = [s >= 0.5 for s in scores]
    point = operating_point(scores, hits, 0.9)
    assert wilson(50, 51)[0] < 0.9 <= perfect_lower(50)  # one more FP below 0.50 breaks the bound
    assert point.threshold == 0.5 and point.kept == 50 and point.true_positives == 50
    assert point.lower_bound == pytest.approx(perfect_lower(50))
    assert point.explain().startswith("min_score 0.5: 50 verdicts at or above, 50 true positive")
    # the minimum sample size holds the threshold up even where the bound alone would allow a higher one
    assert operating_point(scores, hits, 0.9, min_samples=60).threshold is None
    # tied scores stay together: a FP tied with the last TP cannot be cut off
    tied = operating_point([0.8] * 40 + [0.7] * 2, [True] * 40 + [True, False], 0.9)
    assert tied.threshold == 0.8 and tied.kept == 40
    # the configured value keeps exactly the counted samples: 0.6 would let the one at 0.6049 in
    close = operating_point([0.605] * 40 + [0.6049], [True] * 40 + [False], 0.9)
    assert close.threshold == 0.605 and 0.6049 < close.threshold <= 0.605


def test_unreachable_precision_says_more_verdicts_will_not_help() -> None:
    point = operating_point([0.5] * 90 + [0.4] * 10, [True] * 81 + [False] * 19, 0.95)
    assert not point.reached and point.needed is None
    assert point.precision == pytest.approx(0.9) and "will not change it" in point.explain()
    assert operating_point([0.9] * 100, [True] * 100, 1.0).needed is None  # 1.0 is never shown with confidence


class _Row:
    def __init__(self, username: str, user_id: int | None) -> None:
        self.username, self.user_id = username, user_id


def test_domination_counts_accounts_not_names() -> None:
    rows = [_Row("alice", 1)] * 11 + [_Row("bob", 2)] * 9
    found = dominating_account(rows)
    assert found is not None and (found.account, found.verdicts, found.total) == ("alice", 11, 20)
    assert "'alice' gave 11 of 20 (55%, more than 50%)" in found.warning()
    assert dominating_account([_Row("alice", 1)] * 10 + [_Row("bob", 2)] * 10) is None  # half is not more
    assert dominating_account([_Row("alice", 1)] * 9 + [_Row("bob", 2)]) is None  # under min_verdicts
    assert dominating_account([_Row("alice", 1)] * 9 + [_Row("bob", 2)], min_verdicts=5) is not None
    # a renamed account is still one account; two accounts with one name are two
    renamed = dominating_account([_Row("alice", 1)] * 6 + [_Row("alice2", 1)] * 6 + [_Row("bob", 2)] * 8)
    assert renamed is not None and renamed.verdicts == 12 and renamed.account == "alice2"
    assert dominating_account([_Row("x", 1)] * 6 + [_Row("x", 2)] * 6 + [_Row("bob", 3)] * 8) is None


def _event(i: int, score: float, *, camera: str = "front", sha: str = "ab" * 32, start: float | None = None,
           seen_by: str | None = None) -> Event:
    start = 1000.0 + i if start is None else start
    return Event(id=f"{i:032x}", camera=camera, label="person", track_id=i, start=start, end=start + 1,
                 best_score=score, best_box=(1, 2, 3, 4), best_time=start, model_name="yolox-nano",
                 model_sha256=sha, seen_by=seen_by)


def test_calibrate_on_sqlite_uses_the_current_model_and_the_latest_verdicts(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'trustcam.db'}")
    store, reviews = EventStore(engine), Reviews(engine)
    for i in range(80):  # the current model: TP from 0.50 up, FP below; alice and bob take turns
        score = round(0.20 + 0.01 * i, 2)
        store.save(_event(i, score))
        first = Verdict.false_positive if score >= 0.5 else Verdict.true_positive  # a changed mind ...
        reviews.review(f"{i:032x}", first, "alice" if i % 2 else "bob", 1 if i % 2 else 2)
        latest = Verdict.true_positive if score >= 0.5 else Verdict.false_positive  # ... the latest counts
        reviews.review(f"{i:032x}", latest, "alice" if i % 2 else "bob", 1 if i % 2 else 2)
    for i in range(100, 105):  # an older model's high-scoring false positives: other scores, left out
        store.save(_event(i, 0.99, sha="cd" * 32, start=float(i - 100)))
        reviews.review(f"{i:032x}", Verdict.false_positive, "bob", 2)
    store.save(_event(200, 0.95, seen_by="secondary"))  # the second opinion's score, not the primary's
    reviews.review(f"{200:032x}", Verdict.false_positive, "alice", 1)

    [group] = calibrate(reviews.labelled(), target=0.9)
    assert (group.camera, group.label, group.model, group.left_out) == ("front", "person", f"yolox-nano@{'ab' * 6}", 6)
    assert group.point.threshold == 0.5 and group.point.kept == 50 and group.point.samples == 80
    assert group.dominated is None
    assert calibrate(reviews.labelled(), target=0.9, camera="back") == []
    assert math.isclose(group.point.lower_bound, perfect_lower(50))
