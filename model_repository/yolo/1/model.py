"""Triton python-backend model: the contract's model.onnx run by onnxruntime, on CPU or GPU.

The config's ``device`` parameter picks the code path:

- ``cpu`` (configs/cpu.pbtxt, ``--model-config-name=cpu``): CPU instances; Triton's dynamic
  batcher hands ``execute`` several requests at once and requests of the same frame size are
  stacked into one onnxruntime call, so server-side batching is real, not per-request.
- ``gpu`` (configs/gpu.pbtxt): KIND_GPU instances, onnxruntime's CUDA provider on the
  instance's GPU, every node on CUDA (a CPU fallback is refused at load, not run). A request's
  input that Triton hands over on the GPU (``FORCE_CPU_ONLY_INPUT_TENSORS: no``) is bound by
  its DLPack pointer (I/O binding, no copy); each request is one onnxruntime run, since stacking
  GPU requests would copy them. This is the stand-in, in nvidia-pytriton's tritonserver (python
  backend only), for the NGC image's onnxruntime backend (config.pbtxt).
"""

from __future__ import annotations

import ctypes
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

CUDA = "CUDAExecutionProvider"
KDLCUDA = 2  # DLPack's device type for CUDA memory


class GpuUnavailableError(RuntimeError):
    """The gpu config cannot run on the GPU here; it refuses to run on the CPU instead."""


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def dlpack_view(capsule: object) -> tuple[int, int, int, tuple[int, ...]]:
    """(device type, device id, data pointer, shape) of a C-contiguous uint8 DLPack tensor.

    The capsule is read, not consumed: whoever holds it keeps the memory alive."""
    t = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))  # DLManagedTensor starts with its DLTensor
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if (t.dtype.code, t.dtype.bits, t.dtype.lanes) != (1, 8, 1):
        raise ValueError(f"{INPUT.name} must be uint8, DLPack says code {t.dtype.code} bits {t.dtype.bits}")
    if t.strides:
        expected, step = [], 1
        for n in reversed(shape):
            expected.insert(0, step)
            step *= n
        if any(n > 1 and t.strides[i] != expected[i] for i, n in enumerate(shape)):
            raise ValueError(f"{INPUT.name} is not contiguous")
    return t.device.device_type, t.device.device_id, t.data + t.byte_offset, shape


def gpu_session(path: Path, device_id: int, params: dict[str, str]) -> "ort.InferenceSession":
    """onnxruntime on CUDA with every node there, or :class:`GpuUnavailableError`: never the CPU."""
    available = ort.get_available_providers()
    if CUDA not in available:
        raise GpuUnavailableError(
            f"the gpu config needs onnxruntime's CUDA provider, and this onnxruntime ({ort.__version__}, "
            f"{ort.__file__}) has only {available}: install onnxruntime-gpu in the server's environment, "
            "or serve --model-config-name cpu")
    options = ort.SessionOptions()
    # onnxruntime puts small shape computations of a CUDA graph on the CPU itself; "refuse"
    # fails the load if any node is there (benchmarks/gpu_visit.py step 1 reports which).
    if params.get("cpu_nodes", "allow") == "refuse":
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    cuda = {"device_id": str(device_id),
            "cudnn_conv_algo_search": params.get("cudnn_conv_algo_search", "EXHAUSTIVE"),
            "do_copy_in_default_stream": "1"}
    try:
        session = ort.InferenceSession(str(path), options, providers=[(CUDA, cuda)])
    except Exception as e:
        raise GpuUnavailableError(f"onnxruntime's CUDA provider did not start on GPU {device_id}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if session.get_providers()[:1] != [CUDA]:
        raise GpuUnavailableError(f"onnxruntime fell back to {session.get_providers()} instead of CUDA on "
                                  f"GPU {device_id}: its CUDA libraries (cuDNN, cuBLAS) are not loadable")
    session.disable_fallback()  # a CUDA failure while running is an error, not a rerun on the CPU
    return session


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.device = params.get("device", "cpu")
        if self.device == "gpu":
            if args.get("model_instance_kind") != "GPU":
                raise GpuUnavailableError(f"the gpu config needs KIND_GPU instances, not {args.get('model_instance_kind')}")
            self.device_id = int(args.get("model_instance_device_id", 0))
            self.session = gpu_session(path, self.device_id, params)
            return
        if self.device != "cpu":
            raise ValueError(f"parameter device: {self.device!r}, expected cpu or gpu")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list) -> list:
        if self.device == "gpu":
            return [self._run_bound(r) for r in requests]
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

    def _run_bound(self, request: object) -> object:
        """One request through I/O binding: a GPU input by its pointer, a CPU one copied once."""
        try:
            tensor = pb_utils.get_input_tensor_by_name(request, INPUT.name)
            binding = self.session.io_binding()
            if tensor.is_cpu():
                binding.bind_cpu_input(INPUT.name, np.ascontiguousarray(tensor.as_numpy()))
                capsule = None
            else:
                capsule = tensor.to_dlpack()  # held until the run ends: it keeps the memory
                kind, device_id, pointer, shape = dlpack_view(capsule)
                if kind != KDLCUDA or device_id != self.device_id:
                    raise ValueError(f"input on device type {kind} id {device_id}, this instance runs on GPU "
                                     f"{self.device_id}")
                binding.bind_input(INPUT.name, "cuda", device_id, np.uint8, list(shape), pointer)
            for spec in (DETECTIONS, NUM_DETECTIONS):
                binding.bind_output(spec.name, "cpu")
            self.session.run_with_iobinding(binding)
            det, num = binding.copy_outputs_to_cpu()
            del capsule
            return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(DETECTIONS.name, det),
                                                              pb_utils.Tensor(NUM_DETECTIONS.name, num)])
        except Exception as e:  # this request fails, the others run
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
