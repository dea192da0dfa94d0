"""The ``pepr`` command: one sub-command per module.

Each sub-command lives in a module that exposes ``HELP`` (one line), ``DESCRIPTION`` (the
``--help`` text), ``add_arguments(parser)`` and ``run(args) -> int``. Those modules must import
only light packages at module level (torch, timm and codecarbon are imported inside ``run``), so
that ``pepr --help`` and ``pepr score`` start fast.

Any :class:`pepr.errors.PeprInputError` raised by a sub-command becomes a clear message on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pepr.errors import PeprInputError

#: Sub-command name -> module implementing it (imported when the parser is built).
SUBCOMMANDS: dict[str, str] = {
    "score": "pepr.cli.score",
    "train": "pepr.cli.train",
    "estimate": "pepr.cli.estimate",
    "report": "pepr.cli.report",
    "status": "pepr.cli.status",
    "replay": "pepr.cli.replay",
}

DESCRIPTION = """\
pepr: find the deep-learning model with the most performance per resource unit.

PePR (Selvan et al., arXiv 2403.12562) scores each run i of an experiment cell as

    PePR_i = P_i / (1 + R_i),   R_i = (r_i - min r) / (max r - min r) over the cell's runs

where P is a performance in [0, 1] (e.g. test accuracy) and r a resource (energy -> PePR-E,
CO2 -> PePR-C, time -> PePR-T, memory -> PePR-M). The cheapest run of a cell scores P, the
most expensive P/2. Run `pepr COMMAND --help` for each command's flags.
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``pepr`` argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="pepr", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from pepr import __version__

    parser.add_argument("--version", action="version", version=f"pepr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pepr`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # the `pepr` command itself (not a call from Python): pepr train may hand them to a warm server
        args._argv = sys.argv[1:]
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except PeprInputError as exc:
        print(f"pepr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed anyway (disk full, read-only): one line naming the path
        from pepr.results.outputs import write_failure_message

        message = write_failure_message(exc)
        if message is None:
            raise
        print(f"pepr {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pepr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
