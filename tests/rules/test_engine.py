"""Each rule type fires once per object, at the right moment, on the object's foot point."""

from __future__ import annotations

from trustcam.config import parse_settings
from trustcam.config.schema import CameraConfig
from trustcam.rules.engine import RuleEngine
from trustcam.vision.tracker import TrackedObject

W, H = 1000, 500


def camera(rules: list[dict], zones: dict | None = None) -> CameraConfig:
    zones = zones if zones is not None else {"yard": {"coordinates": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}}
    return parse_settings({"cameras": {"c": {"source": "x", "zones": zones, "rules": rules}}}).cameras["c"]


def person(x_feet: float, y_feet: float = 400, track_id: int = 1, label: str = "person") -> TrackedObject:
    return TrackedObject(track_id, label, (x_feet - 20, y_feet - 100, x_feet + 20, y_feet), 0.9)


def walk(engine: RuleEngine, xs: list[float], dt: float = 1.0, **kw: object) -> list:
    hits = []
    for i, x in enumerate(xs):
        hits += engine.update([person(x, **kw)], i * dt)
    return hits


def test_enter_zone_fires_once_on_entry() -> None:
    engine = RuleEngine(camera([{"name": "in", "type": "enter_zone", "zone": "yard", "threat": "high"}]), W, H)
    hits = walk(engine, [100, 300, 450, 600, 700, 800])
    assert [(h.rule, h.time, h.threat.value, h.zone) for h in hits] == [("in", 3.0, "high", "yard")]


def test_zone_uses_feet_not_box_centre() -> None:
    # box spans x 480..520 (centre inside the zone edge at 500) but the feet at x=495 are outside
    engine = RuleEngine(camera([{"name": "in", "type": "enter_zone", "zone": "yard"}]), W, H)
    assert engine.update([TrackedObject(1, "person", (480, 300, 510, 400), 0.9)], 0.0) == []
    assert engine.zones_of(TrackedObject(1, "person", (490, 300, 530, 400), 0.9)) == ["yard"]


def test_zone_object_filter() -> None:
    zones = {"yard": {"coordinates": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]], "objects": ["car"]}}
    engine = RuleEngine(camera([{"name": "in", "type": "enter_zone", "zone": "yard"}], zones), W, H)
    assert walk(engine, [400, 600, 700]) == []
    assert len(walk(engine, [400, 600], label="car", track_id=2)) == 1


def test_loiter_needs_continuous_presence() -> None:
    rule = {"name": "lurk", "type": "loiter", "zone": "yard", "seconds": 5}
    engine = RuleEngine(camera([rule]), W, H)
    # in the zone 4 s, steps out, back in for 5 s: fires only after the second continuous 5 s
    xs = [600, 600, 600, 600, 600, 400, 600, 600, 600, 600, 600, 600]
    hits = walk(engine, xs)
    assert [(h.rule, h.time) for h in hits] == [("lurk", 11.0)]


def test_loiter_rule_respects_object_labels() -> None:
    rule = {"name": "lurk", "type": "loiter", "zone": "yard", "seconds": 1, "objects": ["car"]}
    engine = RuleEngine(camera([rule]), W, H)
    assert walk(engine, [600, 600, 600, 600]) == []


def test_line_crossing_directions() -> None:
    line = [[0.5, 0.0], [0.5, 1.0]]  # vertical line, drawn top to bottom
    rules = [
        {"name": "any", "type": "cross_line", "line": line},
        {"name": "l2r", "type": "cross_line", "line": line, "direction": "left_to_right"},
        {"name": "r2l", "type": "cross_line", "line": line, "direction": "right_to_left"},
    ]
    engine = RuleEngine(camera(rules, zones={}), W, H)
    # Standing at the top looking down, screen-right (x > 500) is on the walker's left.
    hits = walk(engine, [300, 450, 550, 700])
    assert sorted(h.rule for h in hits) == ["any", "r2l"]
    engine = RuleEngine(camera(rules, zones={}), W, H)
    hits = walk(engine, [700, 550, 450, 300])
    assert sorted(h.rule for h in hits) == ["any", "l2r"]


def test_line_segment_end_is_respected() -> None:
    rules = [{"name": "gate", "type": "cross_line", "line": [[0.5, 0.0], [0.5, 0.5]]}]  # upper half only
    engine = RuleEngine(camera(rules, zones={}), W, H)
    assert walk(engine, [300, 700], y_feet=450) == []  # crosses x=500 below the segment
    assert len(walk(engine, [300, 700], y_feet=200, track_id=2)) == 1


def test_each_object_fires_separately_and_forget_resets() -> None:
    engine = RuleEngine(camera([{"name": "in", "type": "enter_zone", "zone": "yard"}]), W, H)
    hits = engine.update([person(600, track_id=1), person(700, track_id=2)], 0.0)
    assert sorted(h.track_id for h in hits) == [1, 2]
    engine.forget(1)
    assert [h.track_id for h in engine.update([person(600, track_id=1)], 1.0)] == [1]
