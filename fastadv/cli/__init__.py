"""The ``fastadv`` command. Each subcommand lives in its own module of ``fastadv.cli.commands``.

Every user error (bad flag, bad value, unknown name, missing data or weights: a
``fastadv.errors.UserError``) is one line on stderr and exit code 2; no tracebacks.
"""
from __future__ import annotations

import argparse
import sys

from fastadv.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    from fastadv._version import __version__
    from fastadv.cli.commands import discover

    parser = Parser(prog="fastadv", description="Fast adversarial training: Free-m, FGSM-RS and PGD training "
                    "with honest PGD evaluation.",
                    epilog="Run `fastadv COMMAND --help` for the flags of each command.")
    parser.add_argument("--version", action="version", version=f"fastadv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in discover():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from fastadv.training.guard import NotLearning
    from fastadv.training.loop import TrainingDiverged, TrainingInterrupted

    try:
        return args.run(args)
    except UserError as exc:
        print(f"fastadv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingDiverged, NotLearning) as exc:
        print(f"fastadv {args.command}: stopped: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"fastadv {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"fastadv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
