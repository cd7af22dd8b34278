"""The serving contract: the one place that names framestream's tensors, dtypes and shapes.

Every model framestream serves (built, wrapped, embedded or behind Triton) takes
letterboxed RGB uint8 frames and returns post-NMS detections. Normalisation and NMS run
inside the graph, so the wire carries 1 byte per pixel in and a few KB out. Everything
else in the project imports these names instead of repeating them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "INPUT",
    "DETECTIONS",
    "NUM_DETECTIONS",
    "TensorSpec",
    "NmsSettings",
    "NMS",
    "ModelInfo",
    "DETECTION_COLUMNS",
    "STRIDE",
    "DEFAULT_IMGSZ",
    "MAX_BATCH",
    "PAD_VALUE",
    "MODEL_NAME",
    "GRPC_PORT",
    "HTTP_PORT",
    "METRICS_PORT",
    "CONTRACT_VERSION",
    "META",
    "CONFIG_PREFIX",
    "COCO_NAMES",
    "model_digest",
]

CONTRACT_VERSION = "1"
STRIDE = 32  # H and W of a dynamic model must be multiples of the largest stride.
DEFAULT_IMGSZ = 640
MAX_BATCH = 32  # Triton's max_batch_size and the largest batch the tests exercise.
PAD_VALUE = 114  # letterbox grey, as ultralytics pads.
MODEL_NAME = "yolo"  # the name the model is served under (model_repository/<name>)
GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002  # Triton's standard ports
DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "score", "class_id")


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract; ``dims`` exclude the batch axis, -1 is dynamic."""

    name: str
    numpy_dtype: type
    triton_dtype: str
    onnx_dtype: int  # onnx.TensorProto enum value, kept numeric so the client needs no onnx
    dims: tuple[int, ...]


@dataclass(frozen=True)
class NmsSettings:
    """Post-processing fixed at build time (ultralytics ``predict`` defaults)."""

    conf_thres: float = 0.25
    iou_thres: float = 0.7
    max_det: int = 300
    # Class-aware NMS runs as one NMS over boxes offset by class_id * max_wh (as ultralytics).
    max_wh: float = 7680.0


NMS = NmsSettings()

INPUT = TensorSpec("images", np.uint8, "UINT8", 2, (-1, -1, 3))
DETECTIONS = TensorSpec("detections", np.float32, "FP32", 1, (NMS.max_det, len(DETECTION_COLUMNS)))
NUM_DETECTIONS = TensorSpec("num_detections", np.int32, "INT32", 6, (1,))


class META:
    """Keys of the ONNX metadata that carries what the client needs to know about a model."""

    CONTRACT = "framestream_contract"
    NAMES = "names"  # same key and format as ultralytics exports: a dict of id -> name
    IMGSZ = "imgsz"  # [h, w]: the model size (the long side limit for a dynamic model)
    DYNAMIC_HW = "dynamic_hw"
    CONF = "conf_thres"
    IOU = "iou_thres"
    MAX_DET = "max_det"
    SOURCE = "source"  # "built yolov8n, untrained" or "wrapped <file>"
    DIGEST = "digest"  # sha256 of the model file; only in a served config (a file cannot hold its own hash)


# Triton returns a model's config (get_model_config), not its ONNX metadata: whatever puts a
# model into a repository writes the metadata, and the digest, into the config's
# ``parameters`` under these prefixed keys (server_config/model/repository.py).
CONFIG_PREFIX = "framestream_"


def _config_key(key: str) -> str:
    return key if key.startswith(CONFIG_PREFIX) else CONFIG_PREFIX + key


def model_digest(path: Path | bytes) -> str:
    """sha256 of a model file's bytes (given the file or the bytes): what the resume identity
    and a served config name it by."""
    if isinstance(path, bytes):
        return hashlib.sha256(path).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What a served model tells the client: input geometry, batch limit, class names, and the
    digest of its bytes (empty until the file exists: a model cannot carry its own hash)."""

    imgsz: tuple[int, int]
    dynamic_hw: bool
    max_batch: int | None  # None: any batch size
    names: Mapping[int, str] = field(default_factory=dict)
    nms: NmsSettings = NMS
    source: str = ""
    digest: str = ""

    def to_metadata(self) -> dict[str, str]:
        return {
            META.CONTRACT: CONTRACT_VERSION,
            META.NAMES: json.dumps({str(k): v for k, v in self.names.items()}),
            META.IMGSZ: json.dumps(list(self.imgsz)),
            META.DYNAMIC_HW: json.dumps(self.dynamic_hw),
            META.CONF: repr(self.nms.conf_thres),
            META.IOU: repr(self.nms.iou_thres),
            META.MAX_DET: str(self.nms.max_det),
            META.SOURCE: self.source,
        }

    @classmethod
    def from_metadata(
        cls, meta: Mapping[str, str], *, input_shape: tuple[int | str | None, ...]
    ) -> "ModelInfo":
        """Read back what :meth:`to_metadata` wrote, with the batch limit from the input shape."""
        h, w = json.loads(meta[META.IMGSZ])
        batch = input_shape[0]
        return cls(
            imgsz=(int(h), int(w)),
            dynamic_hw=json.loads(meta.get(META.DYNAMIC_HW, "false")),
            max_batch=batch if isinstance(batch, int) and batch > 0 else None,
            names={int(k): v for k, v in json.loads(meta.get(META.NAMES, "{}")).items()},
            nms=NmsSettings(
                conf_thres=float(meta.get(META.CONF, NMS.conf_thres)),
                iou_thres=float(meta.get(META.IOU, NMS.iou_thres)),
                max_det=int(meta.get(META.MAX_DET, NMS.max_det)),
            ),
            source=meta.get(META.SOURCE, ""),
        )

    def to_config_parameters(self) -> dict[str, str]:
        """The metadata and the digest as Triton config parameters (string values)."""
        if not self.digest:
            raise ValueError("a served model's parameters need its digest")
        return {_config_key(k): v for k, v in {**self.to_metadata(), META.DIGEST: self.digest}.items()}

    @classmethod
    def from_config_parameters(cls, params: Mapping[str, str], *, max_batch: int) -> "ModelInfo":
        """Read back :meth:`to_config_parameters`; KeyError or ValueError when they are missing or
        from another contract version."""
        meta = {k[len(CONFIG_PREFIX):]: v for k, v in params.items() if k.startswith(CONFIG_PREFIX)}
        meta[META.CONTRACT] = params[META.CONTRACT]
        if meta[META.CONTRACT] != CONTRACT_VERSION:
            raise ValueError(f"contract version {meta[META.CONTRACT]}, this client speaks {CONTRACT_VERSION}")
        digest = meta[META.DIGEST]
        return replace(cls.from_metadata(meta, input_shape=(max_batch,)), digest=digest)

    def to_summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "digest": self.digest,
            "imgsz": list(self.imgsz),
            "dynamic_hw": self.dynamic_hw,
            "max_batch": self.max_batch,
            "conf_thres": self.nms.conf_thres,
            "iou_thres": self.nms.iou_thres,
            "max_det": self.nms.max_det,
            "names": {str(k): v for k, v in self.names.items()},
        }


_COCO_WORDS = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)
# The 80 COCO classes in ultralytics order; "_" joins words of one name.
COCO_NAMES: tuple[str, ...] = tuple(n.replace("_", " ") for n in _COCO_WORDS.split())
