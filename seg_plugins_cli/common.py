"""The one command-line convention of every seg_plugins tool.

- ``--config-file FILE``: a yacs config, or the name of a config shipped with the package
  (``shapes/unet_shapes.yaml``; :mod:`seg_plugins.model_zoo`).
- Config overrides as trailing ``KEY VALUE`` pairs, as in detectron2's ``train_net.py``;
  ``--opts KEY VALUE ...`` is an alias (some detectron2 tools spell it so).
- One output flag, ``-o/--output`` (a folder, or a file for plot-metrics); ``--output-dir``
  is accepted for it.
- Mistakes end with ONE line on stderr, ``seg_plugins: error: ...``, naming the problem, the
  closest flag when a flag is mistyped, and exit status 2.
- Only the standard library is imported here and in the parsers, so ``--help`` and argument
  errors return before torch or detectron2 is imported (about 3 s).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from typing import List, Optional, Sequence

__all__ = [
    "ERROR_PREFIX",
    "ToolParser",
    "add_config_arguments",
    "add_output_argument",
    "add_weights_argument",
    "closest",
    "dispatch",
    "fail",
    "is_config_key",
    "parse",
    "require_weights_or_config",
    "split_overrides",
]

ERROR_PREFIX = "seg_plugins: error: "

# A yacs key as written on a command line: upper-case names joined by dots (SEED, OUTPUT_DIR,
# MODEL.WEIGHTS, MODEL.SEM_SEG_HEAD.NUM_CLASSES).
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


def fail(message: str, status: int = 2) -> int:
    """Print ``message`` as the tools' one error line; return ``status`` for ``main``."""
    print(f"{ERROR_PREFIX}{message}", file=sys.stderr)
    return status


def closest(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def is_config_key(token: str) -> bool:
    return bool(_CONFIG_KEY.match(token))


def split_overrides(tokens: Sequence[str]) -> tuple[List[str], List[str]]:
    """``(values, overrides)``: ``tokens`` up to the first config key (an upper-case dotted
    name such as ``MODEL.WEIGHTS`` that is not an existing path), and the rest.

    Limitation: an upper-case dataset name or flag value (``--json OUT``) would be taken for
    the start of the overrides; pass such a value as ``--json=OUT``."""
    for i, token in enumerate(tokens):
        if is_config_key(token) and not os.path.exists(token):
            return list(tokens[:i]), list(tokens[i:])
    return list(tokens), []


class ToolParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line with a did-you-mean for a
    mistyped flag, and which never guesses abbreviated flags."""

    def __init__(self, *, description: str, epilog: Optional[str] = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, epilog=epilog, allow_abbrev=False, **kwargs)

    def flags(self) -> List[str]:
        return [s for s in self._option_string_actions if s.startswith("--")]

    takes_overrides = False  # set by add_config_arguments

    def parse_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        if not self.takes_overrides:
            return super().parse_args(self._argv, namespace)
        # The overrides start at the first config key: split there before argparse sees
        # them, so that a list-valued flag (--input a.png b.png, --verify-size 64x64) or a
        # positional (dataset names) cannot swallow them; flags and positionals before that
        # may come in any order (intermixed).
        head, tail = split_overrides(self._argv)
        namespace = self.parse_intermixed_args(head, namespace)
        if namespace.opts:  # positionals left over that are no config key
            self.error(
                f"unexpected {' '.join(namespace.opts)}: the KEY VALUE overrides start with "
                "an upper-case config key (e.g. MODEL.WEIGHTS)"
            )
        namespace.opts = tail
        return namespace

    def _unknown_flag(self, words: Sequence[str]) -> Optional[str]:
        flags = self.flags()
        for word in words:
            name = word.split("=")[0]
            if name.startswith("--") and name not in flags:
                return name
            if is_config_key(word):  # the overrides start: their values are not flags
                return None
        return None

    def error(self, message: str):  # argparse's hook: usage + message -> one line
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        # A mistyped flag is the mistake to report, also when argparse noticed first that
        # the flag it stands for is missing ("the following arguments are required").
        flag = self._unknown_flag(
            unknown.group(1).split() if unknown else getattr(self, "_argv", [])
        )
        if flag is not None:
            message = f"unrecognized flag {flag}{closest(flag, self.flags())}"
        self.exit(2, f"{ERROR_PREFIX}{message} (see {self.prog} --help)\n")


def add_config_arguments(parser: ToolParser, *, required: bool = True, overrides=True) -> None:
    """``--config-file`` and, with ``overrides``, the ``KEY VALUE`` pairs (positional, last
    on the line) with their ``--opts`` alias."""
    parser.add_argument(
        "--config-file",
        required=required,
        default="",  # detectron2's
        metavar="FILE",
        help="yacs config file, or the name of a shipped config (e.g. shapes/unet_shapes.yaml;"
        " python -m seg_plugins.model_zoo lists them)",
    )
    if not overrides:
        return
    parser.takes_overrides = True
    parser.add_argument(
        "opts",
        nargs="*",  # filled by ToolParser.parse_args, which splits the overrides off first
        default=[],
        metavar="KEY VALUE",
        help="config overrides at the end of the line, e.g. MODEL.WEIGHTS model.pth "
        "SOLVER.MAX_ITER 100 (as in detectron2's train_net.py)",
    )
    parser.add_argument(
        "--opts",
        dest="opts_flag",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY VALUE",
        help="the same overrides after a flag (alias; last on the line)",
    )


def add_weights_argument(parser: ToolParser) -> None:
    """``--weights``: the checkpoint, whose saved config serves when no config is given."""
    parser.add_argument(
        "--weights",
        metavar="MODEL.pth",
        help="the checkpoint (same as MODEL.WEIGHTS); its saved config is used when "
        "--config-file is not given",
    )


def require_weights_or_config(parser: ToolParser, args: argparse.Namespace) -> None:
    if not args.config_file and not args.weights:
        parser.error("give --weights model.pth (its config is saved in it) or --config-file")


def dispatch(tool: str, args: argparse.Namespace):
    """Import the tool's implementation, ``seg_plugins.tools.<tool>`` (torch, detectron2),
    and return its ``run(args)``."""
    return importlib.import_module(f"seg_plugins.tools.{tool}").run(args)


def add_output_argument(parser: ToolParser, help: str, *, required: bool = True) -> None:
    parser.add_argument(
        "-o", "--output", "--output-dir", dest="output", required=required, help=help
    )


def parse(parser: ToolParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` + the convention's checks: the ``--opts`` alias merged into
    ``args.opts``; a flag that landed among the overrides (a flag after ``KEY VALUE``, or a
    mistyped one) is an error naming it."""
    args = parser.parse_args(argv)
    if hasattr(args, "opts_flag"):
        args.opts = list(args.opts or []) + list(args.opts_flag or [])
        del args.opts_flag
        flags = parser.flags()
        for token in args.opts:
            if token.startswith("--"):
                name = token.split("=")[0]
                if name in flags:
                    parser.error(
                        f"flag {name} after the KEY VALUE overrides: put flags first, the "
                        "overrides last on the line"
                    )
                parser.error(f"unrecognized arguments: {token}")
    return args
