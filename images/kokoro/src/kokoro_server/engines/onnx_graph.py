"""Expose the Kokoro ONNX export's predicted durations as a second graph output.

The kokoro-v1.0 ONNX export has one output, `audio`, but computes the per-token
durations inside, exactly as KModel.forward_with_tokens does:
    pred_dur = Cast(Clip(Round(ReduceSum(Sigmoid(duration_proj)) / speed), min=1))
and then expands the encoder states by them, so audio length = sum(pred_dur) * 600
samples. This module finds that Round -> Clip -> Cast chain and declares the Cast's
output a graph output, so one run returns the audio and the durations that made it.

The model is a protobuf (ModelProto, graph = field 7; GraphProto: node = 1, output =
12); a wire-format reader of a few lines is enough to find the chain and to append one
output, so neither the `onnx` package nor a second copy of the model file is needed.
The file on disk is not changed (its digest is still the manifest's).
"""
from __future__ import annotations

from collections.abc import Iterator

_INT64 = 7  # onnx TensorProto.INT64


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview, start: int = 0,
            end: int | None = None) -> Iterator[tuple[int, int | tuple[int, int], int, int]]:
    """(field number, value or (payload start, end), field start, field end)."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
            yield num, val, first, pos
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield num, (pos, pos + n), first, pos + n
            pos += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield num, (pos, pos + size), first, pos + size
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _str(buf: memoryview, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode()


def _ld(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def duration_tensor(model: bytes) -> tuple[str | None, list[str]]:
    """The name of the predicted-duration tensor (None if this graph has no such chain)
    and the graph's current output names."""
    buf = memoryview(model)
    graph = next((v for num, v, _, _ in _fields(buf) if num == 7), None)
    if graph is None:
        return None, []
    nodes, outputs = [], []
    for num, val, _, _ in _fields(buf, *graph):
        if num == 12:
            outputs.extend(_str(buf, v) for n, v, _, _ in _fields(buf, *val) if n == 1)
        if num != 1:
            continue
        ins, outs, op = [], [], ""
        for n, v, _, _ in _fields(buf, *val):
            if n == 1:
                ins.append(_str(buf, v))
            elif n == 2:
                outs.append(_str(buf, v))
            elif n == 4:
                op = _str(buf, v)
        nodes.append((op, ins, outs))
    consumers: dict[str, list[tuple[str, list[str], list[str]]]] = {}
    for node in nodes:
        for name in node[1][:1]:
            consumers.setdefault(name, []).append(node)
    for op, _, outs in nodes:
        if op != "Round":
            continue
        for clip in consumers.get(outs[0], []):
            if clip[0] != "Clip":
                continue
            for cast in consumers.get(clip[2][0], []):
                if cast[0] == "Cast":
                    return cast[2][0], outputs
    return None, outputs


def with_durations_output(model: bytes) -> tuple[bytes, str] | None:
    """The model with its duration tensor added as an int64 graph output, and that
    output's name; None when the graph has no Round -> Clip -> Cast chain."""
    name, outputs = duration_tensor(model)
    if name is None:
        return None
    if name in outputs:
        return model, name
    buf = memoryview(model)
    _, (g0, g1), f0, f1 = next(f for f in _fields(buf) if f[0] == 7)
    tensor = _enc_varint(1 << 3) + _enc_varint(_INT64)  # TypeProto.Tensor: elem_type
    value_info = _ld(1, name.encode()) + _ld(2, _ld(1, tensor))  # name, type.tensor_type
    graph = bytes(buf[g0:g1]) + _ld(12, value_info)
    return bytes(buf[:f0]) + _ld(7, graph) + bytes(buf[f1:]), name
