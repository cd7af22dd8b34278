#!/bin/sh
# One-shot: fill the model repository volume, unless it already holds a model.
# With $FRAMESTREAM_EXPORT (a file in /exports) the user's export is wrapped; otherwise the
# untrained YOLOv8n is built. The Triton configs come from the image (this repository), so
# the model's parameters (size, class names, digest), which the client reads from the
# served config, are written into them on every start.
set -eu
target=/models/yolo/1/model.onnx
mkdir -p /models/yolo/1 /models/yolo/configs
cp /opt/framestream/model_repository/yolo/config.pbtxt /models/yolo/config.pbtxt
cp /opt/framestream/model_repository/yolo/configs/cpu.pbtxt /models/yolo/configs/cpu.pbtxt
cp /opt/framestream/model_repository/yolo/1/model.py /models/yolo/1/model.py
if [ -f "$target" ]; then
  echo "model-init: $target already there; remove the volume to rebuild"
elif [ -n "${FRAMESTREAM_EXPORT:-}" ]; then
  python -m server_config.model wrap "/exports/$FRAMESTREAM_EXPORT" --out "$target"
else
  python -m server_config.model build --out "$target"
fi
python -m server_config.model stamp /models/yolo
