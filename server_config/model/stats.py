"""Parameter and FLOP counts as ultralytics reports them (fused model, FLOPs = 2 x MACs of convs)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def count_parameters(model: onnx.ModelProto) -> int:
    """Elements of every float initializer that feeds a Conv (weights and biases)."""
    conv_inputs = {name for n in model.graph.node if n.op_type == "Conv" for name in n.input[1:]}
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name in conv_inputs)


def count_gflops(model: onnx.ModelProto, imgsz: int) -> float:
    """Conv FLOPs for one ``imgsz`` x ``imgsz`` frame, measured by running the graph once."""
    import onnxruntime as ort

    from client.contract import INPUT

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    convs = [n for n in probe.graph.node if n.op_type == "Conv"]
    weights = {t.name: t for t in probe.graph.initializer}
    del probe.graph.output[:]
    for n in convs:
        probe.graph.output.append(onnx.ValueInfoProto(name=n.output[0]))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    frame = np.zeros((1, imgsz, imgsz, 3), dtype=INPUT.numpy_dtype)
    outs = sess.run(None, {INPUT.name: frame})
    macs = 0
    for node, out in zip(convs, outs):
        w = numpy_helper.to_array(weights[node.input[1]])
        macs += int(np.prod(out.shape[1:])) * int(np.prod(w.shape[1:]))
    return 2 * macs / 1e9
