"""The `guidekit` command: bad input gets a clear message and exit code 2; Ctrl-C exits 130, and a training
command stopped by SIGINT/SIGTERM saves a checkpoint first and exits 130/143 (128 + the signal number)."""

from __future__ import annotations

import argparse
import shlex
import sys

from guidekit import __version__
from guidekit.errors import GuidekitError


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors (which echo the bad value) cut to a readable length; subcommands inherit it."""

    def error(self, message: str):
        super().error(clip_message(message, 600))


def build_parser() -> argparse.ArgumentParser:
    from guidekit.cli import (control, demo, distill, edit, evaluate, inpaint, restore, sample, sweep, train,
                              train_classifier, train_controlnet, ui, zoo)

    parser = Parser(
        prog="guidekit",
        description="Steer diffusion models: train, sample with classifier-free guidance, and more.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'guidekit COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"guidekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, train_classifier, train_controlnet, distill, sample, control, inpaint, restore, edit,
                   evaluate, sweep, zoo, demo, ui):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (imports, argument parsing): no traceback
        print("guidekit: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    typed = list(argv)
    if argv[:2] == ["eval", "train-evaluator"]:  # `guidekit eval train-evaluator` is its own command
        argv = ["eval-train-evaluator"] + argv[2:]
    args = parser.parse_args(argv)
    try:
        from guidekit.cli.common import check_paths

        check_paths(args)
        args.run(args)
    except GuidekitError as e:
        print(f"guidekit {args.command}: error: {clip_message(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused (a full disk, a path that vanished): say which file, no traceback
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"guidekit {args.command}: error: cannot read or write{where}: {e.strerror or e}; check the path, its "
              f"permissions and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # training's TrainingInterrupted says what it saved and its exit code
        saved = getattr(e, "checkpoint", None) is not None
        hint = f"; resume with: {resume_command(typed)}" if saved else ""
        print(f"guidekit {args.command}: {str(e) or 'interrupted'}{hint}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return 0


def clip_message(text: str, limit: int = 2000) -> str:
    """An error message cut in the middle past limit characters, so a huge echoed value cannot flood the terminal."""
    from guidekit.errors import shown

    return shown(text, limit)


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted training command: the same one with --resume."""
    return shlex.join(["guidekit", *argv, *([] if "--resume" in argv else ["--resume"])])
