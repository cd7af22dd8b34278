"""Before any work: which videos need none (not videos, unreadable, already complete)."""

from __future__ import annotations

import logging
from pathlib import Path

from .discovery import Candidate, discover
from .outfiles import summary_rel
from .report import ERROR, OK, SKIPPED, FileReport
from .resume import NO_RECORD, ResumeLedger, redo_lines
from .sinks import Sink

log = logging.getLogger(__name__)

__all__ = ["triage"]


def triage(root: Path, out: Path, sink: Sink, ledger: ResumeLedger, *, overwrite: bool,
           follow_links: bool) -> tuple[dict[str, FileReport], list[Candidate]]:
    """Reports for what needs no work (not videos, unreadable, already complete); the rest to do."""
    found = discover(root, follow_links=follow_links)
    reports: dict[str, FileReport] = {}
    for c, reason in found.skipped:
        reports[c.rel] = FileReport(c.rel, SKIPPED, error=reason)
    for c, reason in found.errors:
        reports[c.rel] = FileReport(c.rel, ERROR, error=reason)
    todo: list[Candidate] = []
    verdicts = []
    for c in found.videos:
        outputs = sink.outputs(c.rel)
        verdict = ledger.check(c.path, c.rel, outputs)
        if overwrite or not verdict.complete:
            todo.append(c)
            verdicts.append(verdict)
        else:
            reports[c.rel] = FileReport(c.rel, OK, frames=verdict.frames, resumed=True,
                                        outputs=[summary_rel(p, out) for p in outputs])
    if found.videos and len(todo) < len(found.videos):
        log.info("resuming: %d of %d videos already complete", len(found.videos) - len(todo), len(found.videos))
    if overwrite:
        log.info("--overwrite: redoing all %d videos", len(todo))
    else:
        for line in redo_lines(v for v in verdicts if v.reason != NO_RECORD):
            log.info("%s", line)  # say why earlier outputs are replaced
    return reports, todo
