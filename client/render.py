"""python -m client.render OUT [PATH...]: see what the detector found.

For each video of the run in OUT (or the PATHs named), an annotated copy
``OUT/<video>.annotated.mp4`` (boxes, class names, scores, track ids; the source's size,
rotation and frame rate) and a contact sheet ``OUT/<video>.contact.png``; ``--report-only``
rewrites ``OUT/report.html`` instead. Works from what any backend wrote (JSON lines or
Parquet). Each file is written under a hidden temporary name and renamed when whole.

Exit codes (as ``client.bulk``'s): 0 every video asked for was drawn; 1 usage error (OUT holds
no run or no complete output, a PATH that is not a video of the run, a bad option; nothing is
written); 2 some videos could not be drawn (source moved or changed since the run, output
damaged, source unreadable): one line each, and no annotated file of theirs is left; 130
interrupted (Ctrl-C): nothing incomplete is left.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .annotate import SheetSpec, annotate
from .errors import FramestreamError, OutputStorageError, UsageError
from .commandline import EXIT_FAILED, EXIT_OK, Parser, configure_logging, exit_code, print_error
from .limits import ascii_digits
from .outfiles import OutTree, display_rel, summary_rel, write_atomically
from .results import RunOutputs, Video, load_run, read_frames
from .resume import SOURCE_CHANGED, ResumeLedger
from .wording import counted

log = logging.getLogger("client.render")

__all__ = ["main", "render_video", "select", "ANNOTATED", "CONTACT"]

ANNOTATED, CONTACT = ".annotated.mp4", ".contact.png"


def parser(prog: str = "python -m client.render") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Draw a bulk run's detections: OUT/<video>.annotated.mp4 and "
                "OUT/<video>.contact.png per video, or OUT/report.html with --report-only.",
                epilog="Exit codes: 0 all drawn; 1 usage error (no run or no outputs in OUT, a PATH not in "
                "the run); 2 some videos could not be drawn (source moved or changed, output damaged), or OUT could not be "
                "written; "
                "130 interrupted.")
    p.add_argument("out", type=Path, metavar="OUT", help="the --out folder of a bulk run")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="only these videos: as summary.json names them, or their source files (default: every "
                   "video with a complete output)")
    p.add_argument("--source", type=Path, default=None, metavar="DIR",
                   help="the folder the videos are in now, if not where the run read them")
    p.add_argument("--uninferred", choices=("hold", "plain"), default="hold",
                   help="frames the run did not infer (--every, --fps, --keyframes): drawn with the last "
                   "inferred frame's boxes, or left plain")
    p.add_argument("--sheet", default="4x4", metavar="COLSxROWS", help="the contact sheet's grid")
    p.add_argument("--report-only", action="store_true", help="only (re)write OUT/report.html from summary.json")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m client.render", signals: bool | None = None) -> int:
    """The command line; ``signals``: whether Ctrl-C ends it with one line and exit 130 (default:
    when ``argv`` is None, the process's own command line). Called with an ``argv`` by another
    program, Ctrl-C stays that program's KeyboardInterrupt (a test suite stops, not one test)."""
    program = argv is None if signals is None else signals
    args = parser(prog).parse_args(argv)
    configure_logging()
    try:
        if args.report_only:
            from .html_report import write_report

            load_run(args.out)  # the one-line error when OUT holds no run
            log.info("wrote %s", write_report(args.out))
            return EXIT_OK
        return _render(args)
    except FramestreamError as e:  # before any video was drawn (no run, no videos), or the disk failed
        print_error(e)
        return exit_code(e)
    except KeyboardInterrupt as e:
        if not program:
            raise
        print_error("interrupted; every annotated file written is whole, the one in progress was not kept")
        return exit_code(e)


def _sheet(text: str) -> SheetSpec:
    cols, x, rows = text.lower().partition("x")
    if not (x and ascii_digits(cols) and ascii_digits(rows) and int(cols) > 0 and int(rows) > 0):
        raise UsageError(f"--sheet takes COLSxROWS such as 4x4, got {text!r}")
    return SheetSpec(int(cols), int(rows))


def _render(args: argparse.Namespace) -> int:
    sheet = _sheet(args.sheet)
    run = load_run(args.out, args.source)
    videos = select(run, args.paths)
    missing_root = [v for v in videos if v.source is None]
    if missing_root:
        raise UsageError("summary.json does not say where the videos were read from; "
                         "pass --source DIR, the folder the run read")
    ledger = ResumeLedger(run.out, run.digest)
    failed = 0
    for video in videos:
        try:
            written = render_video(run, video, ledger, hold=args.uninferred == "hold", sheet=sheet)
        except OutputStorageError:
            raise
        except FramestreamError as e:
            failed += 1
            log.error("%s: %s", video.rel, e)
        else:
            log.info("%s: %s", video.rel, ", ".join(summary_rel(p, run.out) for p in written))
    if failed:
        log.error("%d of %d videos could not be drawn", failed, len(videos))
    return EXIT_FAILED if failed else EXIT_OK


def select(run: RunOutputs, paths: list[str]) -> list[Video]:
    """The videos asked for: every one with a complete output, or those the PATHs name (as
    summary.json lists them, or their source files). UsageError when nothing can be drawn."""
    if not paths:
        chosen = [v for v in run.videos if v.output is not None]
        if not chosen:
            raise UsageError(f"{run.out}: no video of this run has a complete output to draw "
                             f"({len(run.videos)} listed in summary.json, none ok)")
        others = len(run.videos) - len(chosen)
        if others:
            log.info("%s without a complete output (failed, skipped or not processed) %s not drawn",
                     counted(others, "video"), "is" if others == 1 else "are")
        return chosen
    chosen = []
    for p in paths:
        match = [v for v in run.videos if _names(v, p)]
        if not match:
            example = run.videos[0].rel if run.videos else "none"
            raise UsageError(f"{p}: not a video of the run in {run.out} (it lists {len(run.videos)}, e.g. "
                             f"{example!r}); name it as summary.json does, or by its source file")
        chosen.extend(v for v in match if v not in chosen)
    return chosen


def _names(video: Video, path: str) -> bool:
    if Path(path).as_posix() == video.rel:
        return True
    given = Path(path)
    return video.source is not None and given.exists() and given.resolve() == video.source.resolve()


def render_video(run: RunOutputs, video: Video, ledger: ResumeLedger, *, hold: bool = True,
                 sheet: SheetSpec = SheetSpec()) -> list[Path]:
    """The annotated MP4 and contact sheet of one video; FramestreamError says why not, and then
    no annotated file of this video is left (an earlier one no longer matches)."""
    tree = OutTree(run.out)
    *dirs, name = tree.stem(video.rel)
    mp4, png = (*dirs, name + ANNOTATED), (*dirs, name + CONTACT)
    try:
        _check(video, ledger)
        frames = read_frames(video.output)
        result = {}

        def write(f) -> None:
            result["annotated"] = annotate(video.source, frames, run.names, f, hold=hold, sheet=sheet)

        written = [write_atomically(tree, mp4, write)]
        contact = result["annotated"].sheet
        if contact is not None:
            written.append(write_atomically(tree, png, lambda f: contact.save(f, format="PNG")))
        return written
    except BaseException:
        tree.remove(mp4)
        tree.remove(png)
        raise


def _check(video: Video, ledger: ResumeLedger) -> None:
    if video.output is None:
        raise UsageError(f"no complete output to draw (status {video.status})")
    if not video.source.is_file():
        raise UsageError(f"source not found at {video.source} (moved or deleted?); "
                         "pass --source DIR with the folder it is in now")
    verdict = ledger.check_source(video.source, video.rel, [video.output])
    if verdict.complete:
        return
    if verdict.reason == SOURCE_CHANGED:
        raise UsageError(f"{video.source} is not the file the detections were made from (its size or time "
                         "changed since the run); rerun the bulk command on it")
    raise UsageError(f"{display_rel(str(video.output))}: {verdict.reason}; rerun the bulk command to redo it")


if __name__ == "__main__":
    sys.exit(main())
