"""The ``framestream`` command: one name for the ``python -m`` CLIs an installed user would otherwise spell out.

Each subcommand is a module's own ``main(argv)``, given the rest of the command line and
returning its exit code; this module only chooses the module (imported on use, so
``framestream --help`` loads no onnx or av). Every command exits by one convention
(:mod:`client.commandline`): 0 done, 1 usage error, 2 work failed, 128 + N on signal N.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from .commandline import EXIT_OK, EXIT_USAGE, print_error

__all__ = ["COMMANDS", "main"]


@dataclass(frozen=True)
class Command:
    module: str  # has main(argv: list[str] | None, *, prog: str) -> int
    summary: str
    signals: bool = False  # its main also takes signals=: whether it handles Ctrl-C and SIGTERM itself


COMMANDS: dict[str, Command] = {
    "bulk": Command("client.bulk", "run the detector over every video under DIR (python -m client.bulk)",
                    signals=True),
    "serve": Command("server_config.local", "a local Triton on this machine's CPU (python -m server_config.local)"),
    "model": Command("server_config.model.__main__",
                     "build, wrap, fetch, quantize or stamp a model in the serving contract (python -m server_config.model)",
                     signals=True),
    "render": Command("client.render", "draw a run's detections: annotated MP4s, contact sheets, report.html "
                      "(python -m client.render)", signals=True),
    "summary": Command("client.summary", "merge the summaries of --shard runs into OUT/summary.json "
                       "(python -m client.summary)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    return "\n".join([
        "usage: framestream {" + ",".join(COMMANDS) + "} ...",
        "",
        "Run a YOLO detector over whole directories of video.",
        "",
        "commands:",
        *lines,
        "",
        "'framestream COMMAND --help' describes each command.",
        "",
        "Exit codes, for every command: 0 done; 1 usage error (the command line, a path or a model",
        "cannot be used as given); 2 work failed (videos, a download, a quantisation, the server);",
        "128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM).",
    ])


def main(argv: list[str] | None = None) -> int:
    """``argv`` None: the program (the ``framestream`` command), whose commands handle signals
    themselves; given, a call from another program, whose signal handlers stay its own."""
    program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return EXIT_OK if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print_error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)} (see framestream --help)")
        return EXIT_USAGE
    signals = {"signals": program} if command.signals else {}
    return importlib.import_module(command.module).main(rest, prog=f"framestream {name}", **signals)


if __name__ == "__main__":
    sys.exit(main())
