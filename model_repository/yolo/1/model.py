"""Triton python-backend model: the contract's model.onnx run by onnxruntime on CPU.

Used with ``--model-config-name=cpu`` (configs/cpu.pbtxt). Triton's dynamic batcher hands
``execute`` several requests at once; requests of the same frame size are stacked into one
onnxruntime call, so server-side batching is real, not per-request.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

# The python-backend stub embeds an isolated interpreter that ignores PYTHONPATH; the paths
# server_config.local put there (site-packages, framestream) are added here instead.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from client.contract import DETECTIONS, INPUT, NUM_DETECTIONS  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list) -> list:
        frames = [pb_utils.get_input_tensor_by_name(r, INPUT.name).as_numpy() for r in requests]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            by_shape[f.shape[1:]].append(i)
        responses: list = [None] * len(requests)
        for members in by_shape.values():
            try:
                batch = np.concatenate([frames[i] for i in members])
                det, num = self.session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: batch})
            except Exception as e:  # report per request instead of failing the whole execution
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
                continue
            start = 0
            for i in members:
                n = len(frames[i])
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(DETECTIONS.name, det[start : start + n]),
                        pb_utils.Tensor(NUM_DETECTIONS.name, num[start : start + n]),
                    ]
                )
                start += n
        return responses
