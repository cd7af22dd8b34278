"""What ``--ray`` costs on one machine: a one-node Ray run against the single-process run.

    python -m benchmarks.ray_overhead [--rounds 3] [--clips 4] [--frames 60]

Starts a one-node Ray cluster on loopback with every core, then runs ``client.bulk`` on the
same clips alternately without and with ``--ray`` (so a busy machine slows both alike). Two
ratios, Ray / single process, per round and as medians: the run's own frames/s from
``summary.json`` (the work after start-up; goal >= 0.9), and the whole command's wall time
inverted (interpreter, joining the cluster and starting its worker included). Writes
benchmarks/results/ray_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.common import WORK, bulk_summary, ensure_model, make_clips, table, write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs")
    p.add_argument("--clips", type=int, default=4, help="640x360 H.264 clips")
    p.add_argument("--frames", type=int, default=60, help="frames per clip (every frame inferred)")
    args = p.parse_args()
    rows, run_ratios, command_ratios = measure(args.rounds, args.clips, args.frames)
    rows.append(["median", "", "", "", statistics.median(run_ratios), "", "", statistics.median(command_ratios)])
    headers = ["round", "frames", "single frames/s", "ray frames/s", "run ratio (goal >= 0.9)", "single command s",
               "ray command s", "command ratio"]
    body = (f"{args.clips} clips of {args.frames} frames (640x360), every frame, embedded onnxruntime on CPU, "
            f"YOLOv8n at 640; one-node Ray cluster on loopback with {os.cpu_count()} CPUs; runs alternate.\n\n"
            + table(headers, rows)
            + "\n\nrun ratio: Ray frames/s / single-process frames/s, each the run's own summary figure (after "
              "start-up). command ratio: single command wall / Ray command wall (interpreter, joining the "
              "cluster, starting the node's worker and its onnxruntime sessions included).")
    write_result("ray_overhead", "Ray on one machine: overhead against the single-process run", body)


def ratio(rounds: int = 1, clips: int = 2, frames: int = 45) -> float:
    """The median run ratio (Ray / single process) of a short measurement, for scale_out.py."""
    return statistics.median(measure(rounds, clips, frames)[1])


def measure(rounds: int, clips: int, frames: int) -> tuple[list[list], list[float], list[float]]:
    """Alternating single-process and --ray runs on the same clips: rows, run ratios, command ratios."""
    from ray.cluster_utils import Cluster

    folder = WORK / f"ray_{clips}x{frames}"
    make_clips(folder, count=clips, frames=frames, size_wh=(640, 360), gop=30)
    model = ensure_model()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": os.cpu_count() or 1,
                                                            "node_ip_address": "127.0.0.1", "include_dashboard": False})
    rows, run_ratios, command_ratios = [], [], []
    try:
        for r in range(rounds):
            single, single_s = timed(folder, model)
            ray, ray_s = timed(folder, model, "--ray", cluster.address)
            assert ray["totals"]["frames"] == single["totals"]["frames"], "the two runs did different work"
            run_ratios.append(ray["totals"]["fps"] / single["totals"]["fps"])
            command_ratios.append(single_s / ray_s)
            rows.append([r + 1, single["totals"]["frames"], single["totals"]["fps"], ray["totals"]["fps"],
                         run_ratios[-1], single_s, ray_s, command_ratios[-1]])
    finally:
        cluster.shutdown()
    return rows, run_ratios, command_ratios


def timed(folder, model, *flags: str) -> tuple[dict, float]:
    start = time.perf_counter()
    summary = bulk_summary(folder, model, *flags)
    return summary, time.perf_counter() - start


if __name__ == "__main__":
    main()
