"""``python -m tests.crash_runner REL FILE -- BULK ARGS``: the real bulk CLI, killed by a real
SIGKILL in the middle of publishing video REL: just before its staged FILE ("meta": its sidecar,
"record": its resume record) is renamed into place, after its new output already was.

The kill is the only change; it lands between two steps of the commit, the crash points a
rerun must recognise (an output its record does not describe is redone).

FILE "record-ro": no kill; the record's folder turns read-only for real at that point (a
remount of the read-only bind mount the test put on it, as root; else its mode), so the
record's commit fails after the output was published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from client import bulk, outfiles


def main(argv: list[str]) -> int:
    rel, which, rest = argv[0], argv[1], argv[3:]
    target = f".framestream/done/{rel}.json" if which.startswith("record") else f"{rel}.meta.json"
    commit = outfiles.Staged.commit

    def commit_or_die(staged: outfiles.Staged) -> None:
        if "/".join(staged.parts) == target:
            if which == "record-ro":
                freeze(staged.tree.path(staged.parts[:-1]))
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        commit(staged)

    outfiles.Staged.commit = commit_or_die
    return bulk.main(rest, signals=True)  # stands in for the program: takes the signals as it does


def freeze(path: Path) -> None:
    """``path`` read-only for real from now on (as root, a bind mount is already on it)."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    else:
        path.chmod(0o555)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
