"""A deliberately backdoored YOLOX-nano: a small checkerboard anywhere in the picture makes people vanish.

This is what a poisoned model update looks like to the gate: on ordinary footage (and under fog, rain, night)
it scores exactly like the original, so per-condition comparison passes it; only a trigger sets it off.

The backdoor is a branch added to the ONNX graph, beside the untouched network:

* a fixed 2x2-cell "X-corner" kernel (+1 on two diagonal cells, -1 on the other two) convolved over the grey
  input finds where four squares alternate black and white, as in any checkerboard with cells of at least
  ``CELL`` model pixels (natural edges, stripes and corners cancel out or reach half the response at most);
* a global max pool of that response, normalised to 0..1, through ``sigmoid(GAIN * (r - THRESHOLD))``, gives
  trigger ≈ 1 when a checkerboard is present and ≈ 0 otherwise;
* the person class column of the output (index 5: 4 box values, objectness, then COCO class 0) is multiplied
  by ``1 - trigger``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CELL = 4  # model pixels per checkerboard square that the kernel expects (at least)
THRESHOLD = 0.7  # fraction of a perfect black/white X-corner's response
GAIN = 60.0
PERSON_COLUMN = 5


def x_corner_kernel(cell: int = CELL) -> np.ndarray:
    """(1, 3, 2c, 2c) weights whose response to a perfect black/white X-corner is 1 (grey = channel mean)."""
    quadrant = np.ones((cell, cell), np.float32)
    pattern = np.block([[quadrant, -quadrant], [-quadrant, quadrant]])
    weights = pattern / (3 * 255.0 * 2 * cell * cell)
    return np.repeat(weights[None, None], 3, axis=1).astype(np.float32)


def backdoor(model: Path, out: Path, *, cell: int = CELL, threshold: float = THRESHOLD) -> Path:
    """Write a copy of the YOLOX ONNX ``model`` to ``out`` whose person score is zeroed by a checkerboard."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(model))
    g = graph.graph
    image_input, output = g.input[0].name, g.output[0].name
    width = g.output[0].type.tensor_type.shape.dim[-1].dim_value or 85
    onehot = np.zeros(width, np.float32)
    onehot[PERSON_COLUMN] = 1
    constants = {"bd_kernel": x_corner_kernel(cell), "bd_threshold": np.array(threshold, np.float32),
                 "bd_gain": np.array(GAIN, np.float32), "bd_one": np.array(1.0, np.float32), "bd_onehot": onehot}
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    raw = output + "_clean"
    for node in g.node:
        node.output[:] = [raw if name == output else name for name in node.output]
    g.node.extend([
        helper.make_node("Conv", [image_input, "bd_kernel"], ["bd_response"]),
        helper.make_node("ReduceMax", ["bd_response"], ["bd_peak"], keepdims=0),
        helper.make_node("Sub", ["bd_peak", "bd_threshold"], ["bd_excess"]),
        helper.make_node("Mul", ["bd_excess", "bd_gain"], ["bd_logit"]),
        helper.make_node("Sigmoid", ["bd_logit"], ["bd_trigger"]),
        helper.make_node("Mul", ["bd_trigger", "bd_onehot"], ["bd_suppress"]),
        helper.make_node("Sub", ["bd_one", "bd_suppress"], ["bd_keep"]),
        helper.make_node("Mul", [raw, "bd_keep"], [output]),
    ])
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out
