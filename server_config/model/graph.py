"""A small ONNX graph builder: unique names, initializers, and the few ops YOLO needs.

Building with ``onnx.helper`` directly keeps the project free of torch and makes the
output byte-for-byte deterministic for a given seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Accumulates nodes and initializers; every method returns the name of its output."""

    def __init__(self, prefix: str = "", opset: int = OPSET) -> None:
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = 0

    def name(self, hint: str) -> str:
        self._counter += 1
        return f"{self.prefix}{hint}_{self._counter}"

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value: np.ndarray | float | int | Sequence, dtype=np.float32, hint: str = "c") -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def i64(self, values: Sequence[int] | int) -> str:
        return self.const(values, np.int64, "i64")

    def reduce_max(self, x: str, axis: int) -> str:
        """ReduceMax without keepdims; its axes moved from attribute to input in opset 18."""
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.i64([axis])], keepdims=0)
        return self.op("ReduceMax", [x], axes=[axis], keepdims=0)

    # -- composite layers ---------------------------------------------------------------
    def conv(self, x: str, weight: np.ndarray, bias: np.ndarray | None, *, stride: int = 1) -> str:
        k = weight.shape[-1]
        inputs = [x, self.const(weight, hint="w")]
        if bias is not None:
            inputs.append(self.const(bias, hint="b"))
        return self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])])


def make_model(
    builder: GraphBuilder,
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    *,
    metadata: dict[str, str],
    graph_name: str,
    extra_opsets: Sequence[onnx.OperatorSetIdProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(builder.nodes, graph_name, list(inputs), list(outputs), builder.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", builder.opset), *extra_opsets],
        producer_name="framestream",
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14 and Triton 2.51's backend
    helper.set_model_props(model, metadata)
    return model


def value_info(name: str, elem_type: int, shape: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


FLOAT = TensorProto.FLOAT
