"""The ONNX duration output: found in a graph and added without the `onnx` package."""
from __future__ import annotations

import numpy as np
import pytest
from kokoro_server.engines.onnx_graph import duration_tensor, with_durations_output

ort = pytest.importorskip("onnxruntime")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, payload: bytes | str | int) -> bytes:
    if isinstance(payload, int):
        return varint(num << 3) + varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(num << 3 | 2) + varint(len(data)) + data


def node(op: str, ins: list[str], outs: list[str], attrs: bytes = b"") -> bytes:
    body = b"".join(field(1, i) for i in ins) + b"".join(field(2, o) for o in outs)
    return field(1, body + field(4, op) + attrs)  # GraphProto.node


def value_info(name: str, elem_type: int) -> bytes:
    shape = field(2, field(1, field(2, "N")))  # shape { dim { dim_param: "N" } }
    return field(1, name) + field(2, field(1, field(1, elem_type) + shape))


def tiny_model(with_chain: bool = True) -> bytes:
    """x -> Round -> Clip -> Cast(int64) as Kokoro computes pred_dur, and y = Relu(x) as
    the only declared output."""
    nodes = node("Relu", ["x"], ["y"])
    if with_chain:
        to_int64 = field(5, field(1, "to") + field(20, 2) + field(3, 7))  # attribute to=INT64
        nodes += (node("Round", ["x"], ["r"]) + node("Clip", ["r"], ["c"]) +
                  node("Cast", ["c"], ["d"], to_int64))
    graph = nodes + field(2, "g") + field(11, value_info("x", 1)) + field(12, value_info("y", 1))
    opset = field(8, field(1, "") + field(2, 13))
    return field(1, 8) + opset + field(7, graph)


def test_duration_tensor_is_the_cast_after_round_and_clip():
    assert duration_tensor(tiny_model()) == ("d", ["y"])
    assert duration_tensor(tiny_model(with_chain=False)) == (None, ["y"])
    assert with_durations_output(tiny_model(with_chain=False)) is None


def test_patched_model_returns_the_durations_from_the_same_run():
    plain = ort.InferenceSession(tiny_model())
    assert [o.name for o in plain.get_outputs()] == ["y"]
    patched, name = with_durations_output(tiny_model())
    assert name == "d"
    session = ort.InferenceSession(patched)
    assert [(o.name, o.type) for o in session.get_outputs()] == [
        ("y", "tensor(float)"), ("d", "tensor(int64)")]
    y, d = session.run(None, {"x": np.array([0.4, 1.6, 2.5], np.float32)})
    assert y.tolist() == pytest.approx([0.4, 1.6, 2.5]) and d.tolist() == [0, 2, 2]
    assert with_durations_output(patched) == (patched, "d")  # already there: unchanged
