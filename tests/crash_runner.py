"""``python -m tests.crash_runner REL FILE -- BULK ARGS``: the real bulk CLI, killed by a real
SIGKILL in the middle of publishing video REL: just before its staged FILE ("meta": its sidecar,
"record": its resume record) is renamed into place, after its new output already was.

The kill is the only change; it lands between two steps of the commit, the crash points a
rerun must recognise (an output its record does not describe is redone)."""

from __future__ import annotations

import os
import signal
import sys

from client import bulk, outfiles


def main(argv: list[str]) -> int:
    rel, which, rest = argv[0], argv[1], argv[3:]
    target = f".framestream/done/{rel}.json" if which == "record" else f"{rel}.meta.json"
    commit = outfiles.Staged.commit

    def commit_or_die(staged: outfiles.Staged) -> None:
        if "/".join(staged.parts) == target:
            os.kill(os.getpid(), signal.SIGKILL)
        commit(staged)

    outfiles.Staged.commit = commit_or_die
    return bulk.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
