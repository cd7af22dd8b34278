"""The seed's bulk experiment redone: makespan against workers, with and without key-frame splitting.

    python -m benchmarks.bulk_scalability [--workers 1,2,4,8] [--backends embedded,triton]
                                          [--modes fps2,all] [--sets skewed,dominant,uniform]
                                          [--scale 1] [--name bulk_scalability]

Three generated sets: skewed (six files in the seed's duration ratios), dominant (one file
holding three quarters of the work) and uniform (ten equal files). For each backend, mode,
set, split on/off and worker count it runs ``client.bulk`` and reads the schedule report:
makespan, speedup over 1 worker, efficiency against the lower bound, backend busy fraction.
Every run is the CPU path (PyAV and onnxruntime, ``--device cpu``), also on a machine with a
GPU. Writes benchmarks/results/NAME.md and NAME.png (speedup against workers, with the ideal
line and the seed's published curve).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, WORK, bulk_summary, ensure_model, loop_clip, table, write_result

SEED_RATIOS = (2.75, 9.82, 9.83, 34.84, 21.60, 63.75)  # the seed's file durations (s)
SEED_SPEEDUP = {1: 1.00, 2: 1.33, 4: 1.33, 8: 1.55}
# Per mode: total seconds of 30 fps video in a set, the clips' size, and the flags. --fps 2
# infers 2 of every 30 frames: with 720p H.264 decoding carries the run (on this CPU, 360p
# decodes so fast that even --fps 2 stays inference-bound). "all" infers every frame.
MODES = {"fps2": (60.0, (1280, 720), ["--fps", "2"]), "all": (8.0, (640, 360), [])}


def set_durations(name: str, total_s: float) -> list[float]:
    if name == "skewed":
        weights = list(SEED_RATIOS)
    elif name == "dominant":
        weights = [15.0] + [1.0] * 5
    elif name == "uniform":
        weights = [1.0] * 10
    else:
        raise SystemExit(f"unknown set {name!r}")
    return [total_s * w / sum(weights) for w in weights]


def make_set(name: str, mode: str, scale: float = 1.0) -> Path:
    """The set's files: one encoded second (a 30-frame GOP, no B-frames) copied over and over up
    to each file's length, so that a set of any length is written in the time of copying it."""
    from tests.videos import write_video

    total_s, size_wh, _ = MODES[mode]
    second = WORK / "scalability_sets" / f"second_{size_wh[1]}p.mp4"
    if not second.exists():  # under a temporary name: an interrupted run leaves no half clip
        second.parent.mkdir(parents=True, exist_ok=True)
        tmp = second.with_name(f".{second.name}")
        write_video(tmp, frames=30, size_wh=size_wh, fps=30, gop=30, bframes=0)
        tmp.rename(second)
    folder = WORK / "scalability_sets" / f"{name}_{mode}_{size_wh[1]}p_x{scale:g}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, seconds in enumerate(set_durations(name, total_s * scale)):
        frames = max(2, round(seconds * 30))
        loop_clip(second, folder / f"f{i}_{frames}f.mp4", frames)
    return folder


def schedule(src: Path, model: Path, workers: int, split: bool, mode_flags: list[str], server_flags: list[str]) -> dict:
    flags = ["--device", "cpu", "--workers", str(workers), *([] if split else ["--no-split"]), *mode_flags,
             *server_flags]
    return bulk_summary(src, model, *flags)["schedule"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4,8")
    p.add_argument("--backends", default="embedded")
    p.add_argument("--modes", default="fps2,all")
    p.add_argument("--sets", default="skewed,dominant,uniform")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply each set's video length (a machine with many cores finishes 1x in ~2 s)")
    p.add_argument("--name", default="bulk_scalability", help="results file name (.md and .png)")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    model = ensure_model(640)
    rows, curves = [], {}
    for backend in args.backends.split(","):
        server, server_flags, tmp = None, [], None
        if backend == "triton":
            from tests.triton_server import make_repository, start_server

            tmp = tempfile.TemporaryDirectory()
            server = start_server(make_repository(Path(tmp.name), model))
            server_flags = ["--server", server.config.grpc_url, "--metrics-url", server.config.metrics_url]
        try:
            for mode in args.modes.split(","):
                for set_name in args.sets.split(","):
                    src = make_set(set_name, mode, args.scale)
                    for split in (False, True):
                        base = None
                        for w in workers:
                            s = schedule(src, model, w, split, MODES[mode][2], server_flags)
                            base = base or s["makespan_s"]
                            speedup = base / s["makespan_s"]
                            curves.setdefault((backend, mode, set_name, split), []).append((w, speedup))
                            rows.append([backend, mode, set_name, "on" if split else "off", w, s["segments"],
                                         s["makespan_s"], speedup, s["lower_bound_s"], s["efficiency"],
                                         s["busy_fraction"]])
                            print(rows[-1], flush=True)
        finally:
            if server is not None:
                server.stop()
                tmp.cleanup()
    headers = ["backend", "mode", "set", "split", "workers", "segments", "makespan s", "speedup",
               "lower bound s", "efficiency", "busy fraction"]
    png = draw(curves, workers, RESULTS / f"{args.name}.png")
    write_result(args.name, "Bulk scalability: workers x key-frame splitting",
                 table(headers, rows) + f"\n\n![speedup against workers]({png.name})\n")


def draw(curves: dict, workers: list[int], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    keys = sorted({(b, m) for b, m, _, _ in curves})
    cols = min(2, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    for ax, (backend, mode) in zip(axes.flat, keys):
        ax.plot(workers, workers, "k:", label="ideal")
        ax.plot(list(SEED_SPEEDUP), list(SEED_SPEEDUP.values()), "k--", marker="x", label="seed (published)")
        for (b, m, set_name, split), points in sorted(curves.items()):
            if (b, m) == (backend, mode):
                ax.plot(*zip(*points), marker="o", linestyle="-" if split else "-.",
                        label=f"{set_name}, split {'on' if split else 'off'}")
        ax.set(title=f"{backend}, {mode}", xlabel="workers", ylabel="speedup over 1 worker", xscale="log",
               xticks=workers, xticklabels=[str(w) for w in workers])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0.5, max(workers) + 0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
