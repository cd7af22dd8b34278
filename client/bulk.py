"""python -m client.bulk PATH...: run a YOLO detector over every video under DIR, or the given files.

Inputs (:mod:`client.inputs`): a directory, video files, glob patterns, or ``--from-list FILE``.
Exit codes: 0 every video ok; 1 usage error (a missing input, a glob matching nothing, a list
naming missing files, no video among the inputs, missing model, bad option; nothing is written);
2 some videos failed or were not processed (see summary.json); 128 + the signal's number when a
signal stopped it: 130 Ctrl-C (SIGINT), 143 SIGTERM (``docker stop``), 129 SIGHUP (its terminal
or ssh session closed); all three keep partial outputs and write summary.json. The signals are
the program's (:func:`main` with no argv); a program calling ``main(argv)`` keeps its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from . import backends, defaults, limits
from .bulk_run import Interrupts
from .contract import METRICS_PORT, MODEL_NAME
from .errors import FramestreamError, Interrupted, UsageError
from .filters import DetectionFilter, FilteredSink, make_filter
from .infer import Backend
from .inputs import resolve_inputs
from .model_file import check_model_file, is_untrained, resolve_model
from .options import RAY_AND_SHARD, BulkOptions
from .outfiles import display_rel
from .outlock import hold_out
from .report import OK, SKIPPED, detections_line, print_schedule, print_table, totals
from .run_summary import RunSummary, write_summary
from .shards import Shard, resolve_shard
from .summary import shard_summary_name, write_and_merge
from .terminal import TolerantStream
from .sinks import FORMATS, PARQUET_COLUMNS, Sink
from .threads import ThreadBudget
from .tracking import TRACKERS, TrackOptions, TrackedSink
from .wording import DefaultsHelpFormatter
from .commandline import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser, configure_logging

log = logging.getLogger("client.bulk")

DEFAULT_OUT = Path("framestream-out")


def parser(prog: str = "python -m client.bulk") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Run a YOLO detector over every video under DIR (recursively), or over the video files, "
        "globs or --from-list paths given; write one OUT/<video>.jsonl per video and OUT/summary.json. "
        "Outputs are named by each video's path relative to DIR (several inputs: to the deepest folder "
        "holding them all; one file: its own name).",
        epilog="Exit codes: 0 all videos ok; 1 usage error (a bad option, a missing input, a glob that matches "
        "nothing, a --from-list naming missing files, no video among the inputs, an unknown --classes name: "
        "nothing is written); "
        "2 some videos failed or were not processed; "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP: its terminal closed); "
        "partial outputs and summary.json are kept.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="a directory of videos (searched recursively), video files, or glob patterns "
                   "('clips/**/*.mp4', quoted so that framestream expands it)")
    p.add_argument("--from-list", metavar="FILE", default=None,
                   help="also read paths from FILE, one a line (relative to the current directory; '-': stdin); "
                   "every listed path must exist")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--model", type=Path, default=None,
                   help="contract ONNX model (default: ~/.cache/framestream/model.onnx, built if missing; "
                        "$FRAMESTREAM_HOME or $XDG_CACHE_HOME move it)")
    p.add_argument("--batch", type=int, default=defaults.BATCH,
                   help=f"frames per inference batch (formed across videos), 1 to {limits.MAX_BATCH}: a batch's "
                   "frames are held in memory at once")
    sample = p.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, default=1, metavar="N",
                        help="infer frames 0, N, 2N, ... (N >= 1; beyond a video's length: its first frame)")
    sample.add_argument("--fps", type=float, default=None, metavar="F",
                        help="infer the frame nearest each point of a 1/F-second grid (F finite and above 0; "
                        "above a video's frame rate: every frame, once)")
    sample.add_argument("--keyframes", action="store_true", help="infer key frames only (others are not decoded)")
    keep = p.add_argument_group("filters (applied in the client; part of the resume check)")
    keep.add_argument("--classes", metavar="LIST", default=None,
                      help="keep only these classes: ids or the model's class names, comma-separated "
                      "(--classes person,car or --classes 0,2; a wrong name lists the model's classes)")
    keep.add_argument("--track", nargs="?", const="bytetrack", default=None, choices=TRACKERS, metavar="TRACKER",
                      help="give each detection the id of the object it follows across the video's frames "
                      f"({', '.join(TRACKERS)}; --track alone: bytetrack); needs framestream[track]")
    keep.add_argument("--conf", type=float, default=None, metavar="C",
                      help="keep detections scoring above C; C must be at least the model's built-in "
                      "threshold (0.25 unless built or wrapped with another --conf); C in [0, 1)")
    p.add_argument("--format", choices=FORMATS, default="jsonl",
                   help="jsonl: a file per video; parquet: one dataset OUT/detections/ (needs pyarrow)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoders running at once (each takes the next file or segment, longest first); "
                   f"default {defaults.CPU_WORKERS} on the CPU path (inference is the bottleneck there), "
                   "on the GPU path one NVDEC session per decode engine of the GPU (as PyNvVideoCodec reports; "
                   f"{defaults.GPU_WORKERS} where it does not); 1 to {limits.MAX_WORKERS}")
    p.add_argument("--no-split", action="store_true",
                   help="never cut long videos into segments at key frames (for comparison)")
    p.add_argument("--sessions", type=int, default=None,
                   help="embedded backend: onnxruntime sessions (1 thread each); default: one per usable CPU "
                        "(affinity and cgroup quota), and at most that: each holds a copy of the model and runs "
                        "one thread")
    server = p.add_argument_group("Triton (instead of the embedded onnxruntime)")
    server.add_argument("--server", metavar="HOST:PORT", default=None,
                        help="send every batch to Triton's gRPC endpoint at HOST:PORT")
    server.add_argument("--model-name", default=MODEL_NAME, help="the model's name on the server")
    server.add_argument("--inflight", type=int, default=None, metavar="K",
                        help=f"requests outstanding at most (default: {defaults.INFLIGHT_PER_INSTANCE} per model "
                        f"instance), 1 to {limits.MAX_INFLIGHT}: each has its own connection and input buffer")
    server.add_argument("--shm", choices=["auto", "system", "cuda", "off"], default="auto",
                        help="inputs through Triton shared memory when the server is on this host "
                        "(auto: CUDA shared memory for GPU frames, system shared memory otherwise)")
    server.add_argument("--retry-seconds", type=float, default=defaults.RETRY_S,
                        help="keep retrying an unreachable server this long before failing the files in flight "
                        f"(0 to {limits.MAX_RETRY_S:g} seconds)")
    server.add_argument("--metrics-url", default=None,
                        help=f"Triton's Prometheus endpoint (default: http://<server host>:{METRICS_PORT}/metrics)")
    p.add_argument("--devices", metavar="all|IDS", default=None,
                   help="GPU path: the GPUs to use, 'all' visible (default) or ids like 0,2; with more than one, "
                   "one process per GPU, each on its share of the files (as --shard)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="gpu: NVDEC decoding, CUDA letterbox, GPU inference (or CUDA shared memory to Triton); "
                   "auto takes it when PyNvVideoCodec, CuPy and a GPU all work")
    p.add_argument("--square", action="store_true",
                   help="letterbox to the model's full square even when it takes smaller rectangles")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose outputs are already complete")
    p.add_argument("--verify", action="store_true",
                   help="check every complete output's bytes against its recorded SHA-256 before trusting it "
                   "(default: only an output whose size, mtime, ctime or inode changed is hashed)")
    p.add_argument("--follow-links", action="store_true",
                   help="also follow symlinks to directories outside DIR (file symlinks are always followed)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="P",
                   help=f"serve this run's Prometheus metrics on port P, 1 to {limits.MAX_PORT} (frames, files, "
                   "frames/s, queues)")
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="the address --metrics-port listens on (0.0.0.0: every interface, e.g. in a container)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help=f"process only shard I of N (0 <= I < N <= {limits.MAX_SHARDS}), a work-balanced part of "
                   "DIR; writes "
                   "OUT/summary.shard-I-of-N.json and the last shard merges summary.json. Default from "
                   "JOB_COMPLETION_INDEX + FRAMESTREAM_SHARDS (Kubernetes Indexed Job) or "
                   "SLURM_ARRAY_TASK_ID/_MIN/_COUNT (Slurm array) when set")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on a Ray cluster (HOST:PORT of its head, ray://HOST:PORT, or auto on one of its "
                   "nodes): one worker per node (per GPU on GPU nodes) decodes and infers there (embedded, or "
                   "that node's own --server); DIR and --model at the same paths on every node; needs "
                   "pip install 'framestream[ray]'")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _options(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> BulkOptions:
    """The parsed command line as :class:`BulkOptions`, every check made in the order it has
    always been made (the inputs first); raises UsageError. ``environ``: where a Kubernetes or
    Slurm shard is read from (default ``os.environ``)."""
    inputs = resolve_inputs(args.paths, args.from_list)
    options = BulkOptions(
        inputs=inputs, out=args.out, from_list=args.from_list, model=args.model, batch=args.batch,
        every=args.every, fps=args.fps, keyframes=args.keyframes, classes=args.classes, track=args.track,
        conf=args.conf, format=args.format, workers=args.workers, split=not args.no_split, sessions=args.sessions,
        server=args.server, model_name=args.model_name, inflight=args.inflight, shm=args.shm,
        retry_seconds=args.retry_seconds, metrics_url=args.metrics_url, devices=args.devices, device=args.device,
        square=args.square, overwrite=args.overwrite, follow_links=args.follow_links,
        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr, ray=args.ray,
        progress=False if args.no_progress else None, verify=args.verify)
    if args.ray is not None:
        if args.shard is not None:
            raise UsageError(RAY_AND_SHARD)
        return options  # the cluster spreads the run: no shard, whatever the environment says
    return replace(options, shard=resolve_shard(args.shard, os.environ if environ is None else environ))


def _check_some_video(options: BulkOptions) -> None:
    """A run with no video to read is refused before anything is written (exit 1, as a glob
    that matches nothing): it did nothing, and must not end as a success with an empty table."""
    from .discovery import has_video

    inputs = options.inputs
    if has_video(inputs.root, dirs=inputs.dirs, files=inputs.files, follow_links=options.follow_links,
                 exclude=options.out):
        return
    if inputs.files or len(inputs.dirs) != 1 or options.from_list is not None:
        listed = f" (--from-list {options.from_list})" if options.from_list is not None else ""
        where = f"the {inputs.describe()}{listed}"
    else:
        where = str(inputs.dirs[0])
    looked = ("looked at every file below, recursively, by content whatever its name; hidden ones aside"
              if inputs.dirs else "each read by content: FFmpeg finds no video in any")
    raise UsageError(f"no videos found in {where} ({looked}); give the folder or files that hold the videos")


def main(argv: list[str] | None = None, *, prog: str = "python -m client.bulk", signals: bool | None = None) -> int:
    """The command line; returns its exit code.

    ``signals``: whether the run takes SIGINT, SIGTERM and SIGHUP (stops cleanly, writes
    summary.json, exits 128 + the signal's number). Default: only as the program, when ``argv``
    is None (``python -m client.bulk``, the ``framestream`` command). Called with an ``argv`` by
    another program (a test suite, a script), its handlers stay its own: Ctrl-C raises
    KeyboardInterrupt out of this call once the run's threads are stopped, and stops that
    program, not only this run.
    """
    listen = argv is None if signals is None else signals
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    configure_logging(verbose=args.verbose)
    # SIGINT, SIGTERM and SIGHUP, from here until summary.json is written: during start-up
    # (nothing written yet) a signal raises Interrupted; once the run starts it is a flag the
    # run polls, so no signal lands inside a write, a rename or the summary.
    with Interrupts(armed=False, listen=listen) as interrupts, ExitStack() as held:  # held: OUT's lock
        try:
            return _run(args, argv, interrupts, held)
        except FramestreamError as e:  # usage, model or server problems, found before any file was touched
            log.error("error: %s", e)
            return EXIT_USAGE
        except KeyboardInterrupt as e:  # start-up, before the run: nothing in flight
            if not (listen or isinstance(e, Interrupted)):
                raise  # the calling program's Ctrl-C: its own to handle
            log.error("interrupted; complete outputs are kept, rerun to resume")
            return getattr(e, "exit_code", EXIT_INTERRUPTED)


def _run(args: argparse.Namespace, argv: list[str], interrupts: Interrupts, held: ExitStack) -> int:
    from .metrics import scrape, scrape_after, server_report
    from .resume import ResumeLedger
    from .bulk_run import RunOptions, run_bulk

    opts = _options(args)
    inputs, shard = opts.inputs, opts.shard
    model_path = _checked_model(opts)
    if opts.ray is not None:  # a worker per node, each with its node's backend and thread budget
        from .ray_run import connect, run_on_ray

        backend = connect(opts, model_path)
        gpu, why, budget = backend.gpu, f"chosen on each Ray node by --device {opts.device}", None
        config = backends.pipeline_config(opts, gpu=gpu, workers=backends.worker_count(opts, gpu, device=None),
                                          device=0, budget=None)  # the driver's: each node has its own
    else:
        gpu, why = backends.use_gpu(opts)
        devices = backends.gpu_devices(opts, gpu)
        if len(devices) > 1:
            from .devices import run_per_device

            log.info("device: gpu (%s); %d GPUs, one process each: %s", why, len(devices), ", ".join(map(str, devices)))
            return run_per_device(argv, devices, shard)
        local = backends.start_local(opts, model_path, gpu, devices[0])
        backend, config, budget = local.backend, local.config, local.budget
    if inputs.files or len(inputs.dirs) > 1:
        log.info("inputs: %s (outputs are named relative to it)", inputs.describe())
    sink, keep = _outputs(opts, backend)
    untrained = is_untrained(model_path, backend)
    _say_set_up(gpu, why, budget, untrained)
    metrics_url = opts.metrics_url or (
        f"http://{opts.server.rsplit(':', 1)[0]}:{METRICS_PORT}/metrics" if opts.server and not opts.ray else None)
    try:
        try:
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {opts.out}: {e.strerror}") from e
        held.enter_context(hold_out(opts.out, shard))  # one run per OUT; OUT writable, before any decoding
        options = {"sampling": opts.sampling.describe(), "square": opts.square, "format": opts.format, **keep.options(),
                   **({"track": TrackOptions(opts.track).describe()} if opts.track is not None else {})}
        if opts.format == "parquet":
            options["parquet_columns"] = list(PARQUET_COLUMNS)
        ledger = ResumeLedger(opts.out, backend.model.digest, options,  # on --server: the served model's digest
                              verify=opts.verify)
        run = RunOptions(inputs, opts.out, config, overwrite=opts.overwrite, split=opts.split,
                         progress=opts.progress, follow_links=opts.follow_links, shard=shard)
        before = scrape(metrics_url, opts.model_name) if metrics_url else None
        telemetry = _telemetry(opts.metrics_port, opts.metrics_addr)
        start, started_utc = time.monotonic(), time.time()
        interrupts.arm()  # from here on a signal is a flag: the run stops cleanly and the summary is written
        try:
            if opts.ray is not None:
                result = run_on_ray(backend, run, sink, ledger, telemetry, interrupts=interrupts)
            else:
                result = run_bulk(run, backend, sink, ledger, telemetry, interrupts=interrupts)
        finally:
            if telemetry is not None:
                telemetry.close()
        wall = time.monotonic() - start
        answered = getattr(backend, "images_answered", 0)  # Triton counts a request after its response is sent
        after = scrape_after(metrics_url, opts.model_name, before, answered) if metrics_url else None
        server = server_report(before, after) if metrics_url else None
    finally:
        backend.close()
    files = result.files
    summary_totals = totals(files, wall)
    summary = RunSummary.from_json({
        "started_utc": result.started_utc if result.started_utc is not None else started_utc,
        "files": [f.to_json(summary_totals["frames"]) for f in files],
        "totals": summary_totals,
        "stopped": result.stopped,
        "schedule": result.schedule,
        "model": {"path": str(model_path) if model_path else None, **backend.model.to_summary()},
        "inputs": {"root": display_rel(os.path.abspath(inputs.root)), "dirs": len(inputs.dirs), "files": len(inputs.files)},
        "options": {**options, "batch": opts.batch, "workers": config.workers,
                    "backend": "triton" if opts.server else "embedded", "device": "gpu" if gpu else "cpu"},
        "backend": {**_backend_report(backend), "busy_fraction": result.schedule["busy_fraction"]},
        "throughput": result.throughput,
        **({"server": server} if server is not None else {}),
        **({"server_counters": {"url": metrics_url, "before": before, "after": after}}
           if metrics_url and before is not None and after is not None else {}),
        **({"ray": {"address": opts.ray, "units_rerun": result.schedule.get("units_rerun", 0),
                    "workers": [n.to_summary() for n in backend.nodes]}} if opts.ray is not None else {}),
        **({"shard": {"index": shard.index, "count": shard.count, "host": socket.gethostname()}}
           if shard is not None else {}),
    })
    try:
        _write_summary(opts.out, summary, shard)
    except OSError as e:
        log.error("cannot write the summary in %s: %s", opts.out, e.strerror or e)
        written = False
    else:
        written = True
    people = TolerantStream(sys.stderr)  # closed or a pipe nobody reads: the exit code stays the run's
    print_table(files, summary_totals, people)
    print_schedule(result.schedule, people)
    if server is not None:
        log.info("server: %d inferences in %d executions (avg batch %.2f), queue %.2f ms and compute %.2f ms per "
                 "request, %d failed requests", server["inferences"], server["executions"], server["avg_batch_size"],
                 server["queue_ms_per_request"], server["compute_ms_per_request"], server["request_failures"])
    last = detections_line(summary_totals)  # the run's last line: what its outputs hold
    if summary_totals.get("continued"):
        n = summary_totals["continued"]
        last += f"; resumed {n} video{'s' if n != 1 else ''} from partials, {summary_totals['frames_kept']:,} frames kept"
    if untrained:
        from server_config.model.untrained import untrained_notice

        last += f"; warning: {untrained_notice()}"
    print(last, file=people)
    name = "summary.json" if shard is None else shard_summary_name(shard)
    if result.stopped:
        log.error("run stopped (%s): %s; rerun the same command to resume", result.stopped,
                  f"see {name}" if written else f"{name} could not be written")
    if result.interrupt is not None:
        return 128 + signal.Signals[result.interrupt].value
    if interrupts.exit_code is not None:  # it came after the run's work: nothing was cut short
        log.warning("%s received after the videos were processed; %s", interrupts.signal_name,
                    f"{name} is complete" if written else f"{name} could not be written")
        return interrupts.exit_code
    complete = written and all(f.status in (OK, SKIPPED) for f in files)
    return EXIT_OK if complete else EXIT_FAILED


def _checked_model(opts: BulkOptions) -> Path | None:
    """The last checks before anything is set up, in the order a person meets them; the model
    file the run loads (built at the default place if missing; None with --server)."""
    if opts.model is not None and opts.embedded:
        check_model_file(opts.model)  # a wrong option is said first, as before the inputs are searched
    _check_some_video(opts)  # before the default model is built: a refused run writes nothing
    model_path = resolve_model(opts.model, build=opts.embedded)
    if opts.format == "parquet":
        from .sinks import make_sink

        make_sink(opts.format, opts.out)  # pyarrow is there (or one line says how to install it)
    return model_path


def _outputs(opts: BulkOptions, backend: Backend) -> tuple[Sink, DetectionFilter]:
    """The run's sink, wrapped by --track and the --classes/--conf filter (which it returns too);
    a refused option closes the backend before its one line."""
    from .sinks import make_sink

    try:
        keep = make_filter(opts.classes, opts.conf, backend.model, served=not opts.embedded)
        sink = make_sink(opts.format, opts.out, names=backend.model.names)
        if opts.track is not None:  # inside the filter below: only the kept detections are tracked
            sink = TrackedSink(sink, TrackOptions(opts.track))
    except UsageError:
        backend.close()
        raise
    if keep.active:
        sink = FilteredSink(sink, keep)
        log.info("keeping %s", _describe_filter(keep, backend.model.names))
    return sink, keep


def _say_set_up(gpu: bool, why: str, budget: ThreadBudget | None, untrained: bool) -> None:
    """The start-up lines, once every check has passed."""
    log.info("device: %s (%s)", "gpu" if gpu else "cpu", why)
    if untrained:  # said at the start and again at the end, where the count of nothing found is
        from server_config.model.untrained import untrained_notice

        log.warning("warning: %s", untrained_notice())
    if budget is not None:
        log.info("%s", budget.describe())
    if not gpu:
        from .decode.pyav_source import resize_method

        log.info("letterbox: %s", resize_method())


def _write_summary(out: Path, summary: RunSummary, shard: Shard | None) -> None:
    """summary.json; a shard writes its own and merges summary.json when it is the last."""
    if shard is None:
        write_summary(out, summary)
        _write_html_report(out)
        return
    if write_and_merge(out, shard, summary) is not None:
        log.info("all %d shards done: merged %s", shard.count, out / "summary.json")
        _write_html_report(out)


def _write_html_report(out: Path) -> None:
    """OUT/report.html from summary.json and the outputs; the results are safe by now, so a
    failure here costs the page alone (a warning), never the run's exit code."""
    try:
        from .html_report import write_report

        log.info("report: %s", write_report(out))
    except Exception as e:  # noqa: BLE001 - any failure of the page: one line, the run's outcome stands
        log.debug("writing the HTML report failed", exc_info=True)
        log.warning("could not write %s: %s (python -m client.render %s --report-only retries)",
                    out / "report.html", e, out)


def _describe_filter(keep: DetectionFilter, names) -> str:
    parts = []
    if keep.class_ids is not None:
        parts.append("classes " + ", ".join(f"{i} {names.get(i, '?')}" for i in sorted(keep.class_ids)))
    if keep.min_score is not None:
        parts.append(f"scores above {keep.min_score:g}")
    return "; ".join(parts)


def _telemetry(port: int | None, addr: str):
    if port is None:
        return None
    from .telemetry import RunTelemetry

    telemetry = RunTelemetry(port, addr=addr)
    log.info("run metrics on %s", telemetry.url)
    return telemetry


def _backend_report(backend) -> dict[str, object]:
    """How the backend was used; its busy fraction is the schedule's (one figure, one place)."""
    report: dict[str, object] = {"lanes": backend.lanes}
    in_flight = getattr(backend, "in_flight", None)
    if in_flight is not None:
        report["inflight_limit"] = backend.lanes
        report["inflight_peak"] = in_flight.peak
        report["transport"] = f"{backend.shm}_shm" if backend.shm else "grpc"
    return report


if __name__ == "__main__":
    sys.exit(main())
