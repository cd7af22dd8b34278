"""Before any work: which videos need none (not videos, unreadable, already complete)."""

from __future__ import annotations

import logging
from pathlib import Path

from .decode import Sampling
from .discovery import Candidate, discover
from .inputs import Inputs
from .outfiles import summary_rel
from .report import ERROR, OK, SKIPPED, FileReport
from .resume import NO_RECORD, ResumeLedger, redo_lines
from .schedule import estimated_work
from .shards import Shard, take
from .sidecar import Sidecars
from .sinks import Sink
from .wording import counted

log = logging.getLogger(__name__)

__all__ = ["triage"]


def triage(inputs: Inputs | Path, out: Path, sink: Sink, ledger: ResumeLedger, *, overwrite: bool,
           follow_links: bool, shard: Shard | None = None,
           sampling: Sampling = Sampling(),
           sidecars: Sidecars | None = None) -> tuple[dict[str, FileReport], list[Candidate]]:
    """Reports for what needs no work (not videos, unreadable, already complete); the rest to do.

    ``inputs``: a directory, or what :func:`client.inputs.resolve_inputs` made of the command
    line. With a ``shard``, only its part of the inputs: split before the resume check, so
    every shard computes the same partition however far each has got.
    """
    if not isinstance(inputs, Inputs):
        inputs = Inputs(root=Path(inputs), dirs=(Path(inputs),))
    found = discover(inputs.root, dirs=inputs.dirs, files=inputs.files, follow_links=follow_links, exclude=out)
    if shard is not None:
        found = take(found, shard, lambda c: estimated_work(c, sampling))
        log.info("%s: %d of the directory's videos", shard.name.replace("-", " "), len(found.videos))
    reports: dict[str, FileReport] = {}
    for c, reason in found.skipped:
        reports[c.rel] = FileReport(c.rel, SKIPPED, error=reason)
    for c, reason in found.errors:
        reports[c.rel] = FileReport(c.rel, ERROR, error=reason)
    todo: list[Candidate] = []
    verdicts = []
    if ledger.verify and not overwrite and found.videos:
        log.info("--verify: reading every complete output to check it against its recorded SHA-256")
    for c in found.videos:
        if overwrite:  # no need to check earlier outputs
            todo.append(c)
            continue
        outputs = sink.outputs(c.rel)
        verdict = ledger.check(c.path, c.rel, outputs)
        if not verdict.complete:
            todo.append(c)
            verdicts.append(verdict)
        else:
            reports[c.rel] = FileReport(c.rel, OK, frames=verdict.frames, resumed=True,
                                        outputs=[summary_rel(p, out) for p in outputs],
                                        **_sidecar(sidecars, c.rel, out, verdict.frames))
    if found.videos and len(todo) < len(found.videos):
        log.info("resuming: %d of %s already complete", len(found.videos) - len(todo),
                 counted(len(found.videos), "video"))
    if overwrite:
        log.info("--overwrite: redoing %s", "the one video" if len(todo) == 1 else f"all {len(todo)} videos")
    else:
        for line in redo_lines(v for v in verdicts if v.reason != NO_RECORD):
            log.info("%s", line)  # say why earlier outputs are replaced
    return reports, todo


def _sidecar(sidecars: Sidecars | None, rel: str, out: Path, frames: int) -> dict[str, object]:
    """A resumed video's letterbox shape, sidecar and detections, from the sidecar its run wrote
    (if any; its detections are unknown when that run did not count them)."""
    if sidecars is None:
        return {}
    doc = sidecars.read(rel)
    shape = Sidecars.letterbox_of(doc)
    return {"letterbox": shape, "meta": summary_rel(sidecars.path(rel), out) if shape is not None else None,
            "detections": Sidecars.detections_of(doc, frames)}
