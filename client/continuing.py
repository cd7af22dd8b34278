"""A run's plans with the partial outputs it continues: which partials hold, and where each resumes.

Between :mod:`client.partials` (the records and their checks) and :mod:`client.schedule` (key
frames and segments), so neither needs the other's job. One log line per reason a partial is
not continued, and one saying how many frames the partials kept.
"""

from __future__ import annotations

import logging

from .decode import Sampling
from .discovery import Candidate
from .partials import Partials, continuations, discard_lines
from .schedule import FilePlan, plan_continuing

log = logging.getLogger(__name__)

__all__ = ["plan_run"]


def plan_run(todo: list[Candidate], partials: Partials, sampling: Sampling, *, workers: int, split: bool,
             overwrite: bool) -> list[FilePlan]:
    """Every video's plan; a video whose partial output holds (same model, options and source,
    its bytes as recorded, a prefix of the frames to infer) continues it (``FilePlan.kept``).
    ``overwrite`` continues none."""
    kept = {} if overwrite else continuations(todo, partials)
    plans, refused = plan_continuing(todo, sampling, workers=workers, split=split, partials=kept)
    for rel in refused:
        partials.forget(rel)
    for line in discard_lines(refused.values()):
        log.info("%s", line)
    continued = [p for p in plans if p.kept is not None]
    if continued:
        n = len(continued)
        log.info("continuing %d video%s from %s partial output%s: %s frames kept (each re-decoded from its last key "
                 "frame before the stop)", n, "s" if n != 1 else "", "their" if n != 1 else "its", "s" if n != 1 else "",
                 f"{sum(p.kept_frames for p in continued):,}")
    return plans
