"""YOLOv8's real topology as an ONNX graph with seeded, untrained weights.

The layers follow ultralytics' ``yolov8.yaml`` exactly (Conv-BN-SiLU with BN folded into
the conv, as every export fuses it; C2f; SPPF; PAN neck; decoupled Detect head with DFL
and anchor decoding), so speed measured on this graph holds for a trained YOLOv8 of the
same scale. Anchors are computed in the graph from feature-map shapes, which keeps H and W
dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import GraphBuilder

REG_MAX = 16
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Scale:
    depth: float
    width: float
    max_channels: int


SCALES = {
    "n": Scale(0.33, 0.25, 1024),
    "s": Scale(0.33, 0.50, 1024),
    "m": Scale(0.67, 0.75, 768),
}


class _Net:
    """Emits layers into a GraphBuilder, drawing weights from one seeded generator."""

    def __init__(self, g: GraphBuilder, scale: Scale, seed: int) -> None:
        self.g = g
        self.scale = scale
        self.rng = np.random.default_rng(seed)

    def ch(self, c: int) -> int:
        c = min(c, self.scale.max_channels) * self.scale.width
        return int(np.ceil(c / 8) * 8)

    def depth(self, n: int) -> int:
        return max(round(n * self.scale.depth), 1)

    def weights(self, cin: int, cout: int, k: int, gain: float = 1.7) -> tuple[np.ndarray, np.ndarray]:
        std = gain / np.sqrt(cin * k * k)
        w = self.rng.normal(0.0, std, size=(cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, size=(cout,)).astype(np.float32)
        return w, b

    # -- ultralytics modules --------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 1, s: int = 1) -> str:
        w, b = self.weights(cin, cout, k)
        return self.g.silu(self.g.conv(x, w, b, stride=s))

    def bottleneck(self, x: str, c: int, shortcut: bool) -> str:
        y = self.conv(self.conv(x, c, c, 3), c, c, 3)
        return self.g.op("Add", [x, y]) if shortcut else y

    def c2f(self, x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        c = cout // 2
        y = self.conv(x, cin, 2 * c, 1)
        parts = self.g.op("Split", [y, self.g.i64([c, c])], n_out=2, axis=1)
        outs = list(parts)
        for _ in range(n):
            outs.append(self.bottleneck(outs[-1], c, shortcut))
        return self.conv(self.g.op("Concat", outs, axis=1), (2 + n) * c, cout, 1)

    def sppf(self, x: str, cin: int, cout: int, k: int = 5) -> str:
        c = cin // 2
        outs = [self.conv(x, cin, c, 1)]
        for _ in range(3):
            outs.append(self.g.op("MaxPool", [outs[-1]], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4))
        return self.conv(self.g.op("Concat", outs, axis=1), 4 * c, cout, 1)

    def upsample(self, x: str) -> str:
        scales = self.g.const([1.0, 1.0, 2.0, 2.0])
        return self.g.op("Resize", [x, "", scales], mode="nearest")

    def concat(self, *xs: str) -> str:
        return self.g.op("Concat", list(xs), axis=1)


def build_raw_yolov8(g: GraphBuilder, images: str, *, size: str, num_classes: int, seed: int) -> str:
    """Append YOLOv8-``size`` to ``images`` (float [B,3,H,W] in 0..1); return the raw head.

    The raw head is ``[B, 4 + num_classes, N]``: box centre x, y, width, height in input
    pixels, then per-class probabilities, as ultralytics exports it.
    """
    net = _Net(g, SCALES[size], seed)
    c = net.ch
    d = net.depth
    # Backbone.
    x = net.conv(images, 3, c(64), 3, 2)
    x = net.conv(x, c(64), c(128), 3, 2)
    x = net.c2f(x, c(128), c(128), d(3), True)
    x = net.conv(x, c(128), c(256), 3, 2)
    p3 = net.c2f(x, c(256), c(256), d(6), True)
    x = net.conv(p3, c(256), c(512), 3, 2)
    p4 = net.c2f(x, c(512), c(512), d(6), True)
    x = net.conv(p4, c(512), c(1024), 3, 2)
    x = net.c2f(x, c(1024), c(1024), d(3), True)
    p5 = net.sppf(x, c(1024), c(1024))
    # PAN neck.
    h4 = net.c2f(net.concat(net.upsample(p5), p4), c(1024) + c(512), c(512), d(3), False)
    h3 = net.c2f(net.concat(net.upsample(h4), p3), c(512) + c(256), c(256), d(3), False)
    x = net.conv(h3, c(256), c(256), 3, 2)
    h4 = net.c2f(net.concat(x, h4), c(256) + c(512), c(512), d(3), False)
    x = net.conv(h4, c(512), c(512), 3, 2)
    h5 = net.c2f(net.concat(x, p5), c(512) + c(1024), c(1024), d(3), False)
    return _detect(net, [(h3, c(256)), (h4, c(512)), (h5, c(1024))], num_classes)


def _detect(net: _Net, levels: list[tuple[str, int]], nc: int) -> str:
    g = net.g
    c2 = max(16, levels[0][1] // 4, REG_MAX * 4)
    c3 = max(levels[0][1], min(nc, 100))
    flat, anchors, strides = [], [], []
    for (x, ch), stride in zip(levels, STRIDES):
        w_box, b_box = net.weights(c2, 4 * REG_MAX, 1)
        b_box[:] = 1.0  # ultralytics' bias_init for the box branch
        box = g.conv(net.conv(net.conv(x, ch, c2, 3), c2, c2, 3), w_box, b_box)
        w_cls, b_cls = net.weights(c3, nc, 1, gain=0.1)
        # ultralytics' bias_init: a prior of about 5 objects per 640x640 image.
        b_cls[:] = np.log(5 / nc / (640 / stride) ** 2) + 5
        cls = g.conv(net.conv(net.conv(x, ch, c3, 3), c3, c3, 3), w_cls, b_cls)
        out = g.op("Concat", [box, cls], axis=1)
        flat.append(g.op("Reshape", [out, g.i64([0, 4 * REG_MAX + nc, -1])]))
        a, s = _anchors(g, x, stride)
        anchors.append(a)
        strides.append(s)
    raw = g.op("Concat", flat, axis=2)
    box, cls = g.op("Split", [raw, g.i64([4 * REG_MAX, nc])], n_out=2, axis=1)
    dist = _dfl(g, box)
    anchor = g.op("Concat", anchors, axis=1)  # [2, N]
    stride = g.op("Concat", strides, axis=1)  # [1, N]
    lt, rb = g.op("Split", [dist, g.i64([2, 2])], n_out=2, axis=1)
    x1y1 = g.op("Sub", [anchor, lt])
    x2y2 = g.op("Add", [anchor, rb])
    cxy = g.op("Div", [g.op("Add", [x1y1, x2y2]), g.const(2.0)])
    wh = g.op("Sub", [x2y2, x1y1])
    xywh = g.op("Mul", [g.op("Concat", [cxy, wh], axis=1), stride])
    return g.op("Concat", [xywh, g.op("Sigmoid", [cls])], axis=1)


def _dfl(g: GraphBuilder, box: str) -> str:
    """Distribution focal loss decoding: expected distance over REG_MAX bins, as a 1x1 conv."""
    x = g.op("Reshape", [box, g.i64([0, 4, REG_MAX, -1])])
    x = g.op("Softmax", [g.op("Transpose", [x], perm=[0, 2, 1, 3])], axis=1)
    bins = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    x = g.op("Conv", [x, g.const(bins, hint="dfl")], kernel_shape=[1, 1])
    return g.op("Reshape", [x, g.i64([0, 4, -1])])


def _anchors(g: GraphBuilder, feature: str, stride: int) -> tuple[str, str]:
    """Grid-cell centres of one level ([2, h*w], x then y, row-major) and its stride ([1, h*w])."""
    shape = g.op("Shape", [feature])
    h = g.op("Cast", [g.op("Gather", [shape, g.i64(2)])], to=1)
    w = g.op("Cast", [g.op("Gather", [shape, g.i64(3)])], to=1)
    half, one = g.const(0.5), g.const(1.0)
    ys = g.op("Range", [half, h, one])
    xs = g.op("Range", [half, w, one])
    hw = g.op("Concat", [g.op("Shape", [ys]), g.op("Shape", [xs])], axis=0)
    gx = g.op("Expand", [g.op("Unsqueeze", [xs, g.i64([0])]), hw])
    gy = g.op("Expand", [g.op("Unsqueeze", [ys, g.i64([1])]), hw])
    flat = g.i64([1, -1])
    grid = g.op("Concat", [g.op("Reshape", [gx, flat]), g.op("Reshape", [gy, flat])], axis=0)
    s = g.op("Mul", [g.op("ConstantOfShape", [g.op("Shape", [g.op("Reshape", [gx, flat])])],
                          value=_float_tensor(1.0)), g.const(float(stride))])
    return grid, s


def _float_tensor(v: float):
    from onnx import helper, TensorProto

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [v])
