"""The one command-line convention of every tool (seg_plugins_cli): --help without torch,
one-line errors with did-you-mean, KEY VALUE overrides and their --opts alias, help on every
flag, the output flag and its alias, and train's flags equal to detectron2's."""

import argparse
import importlib
import os
import subprocess
import sys

import pytest

from seg_plugins_cli import TOOLS
from seg_plugins_cli.common import ERROR_PREFIX, split_overrides

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(TOOLS.values())
SCRIPTS = {  # tools/<script>.py -> module
    "train_net": "train",
    "predict": "predict",
    "export_model": "export",
    "check_dataset": "check",
    "dataset_stats": "stats",
    "visualize_data": "visualize",
    "plot_metrics": "plot_metrics",
}
# A valid command line per tool (files need not exist: only the parsing is tested).
VALID = {
    "train": ["--config-file", "c.yaml"],
    "predict": ["--weights", "m.pth", "--input", "a.png", "-o", "out"],
    "export": ["--weights", "m.pth", "-o", "out"],
    "check": ["shapes_val"],
    "stats": ["shapes_val"],
    "visualize": ["--config-file", "c.yaml", "--source", "annotation", "-o", "out"],
    "plot_metrics": ["metrics.json"],
}
TAKES_CONFIG = [m for m in MODULES if m != "plot_metrics"]


def _parser(module):
    return importlib.import_module(f"seg_plugins_cli.{module}").build_parser()


def _parse(module, argv):
    mod = importlib.import_module(f"seg_plugins_cli.{module}")
    if hasattr(mod, "parse_args"):
        return mod.parse_args(argv)
    return mod.parse(mod.build_parser(), argv)


def _run(code: str, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd or REPO
    )


def test_every_console_script_has_its_repository_script():
    assert sorted(SCRIPTS.values()) == MODULES
    for script, module in SCRIPTS.items():
        wrapper = importlib.import_module(f"tools.{script}")
        assert wrapper.main is importlib.import_module(f"seg_plugins_cli.{module}").main


def test_parsers_import_neither_torch_nor_seg_plugins():
    """What makes --help fast: parsing needs the standard library only."""
    code = (
        "import sys\n"
        f"for m in {MODULES!r}:\n"
        "    __import__('seg_plugins_cli.' + m, fromlist=['x']).build_parser()\n"
        "heavy = [n for n in ('torch', 'detectron2', 'seg_plugins', 'numpy') if n in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_of_every_tool(script):
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:") and "--help" in r.stdout
    if SCRIPTS[script] in TAKES_CONFIG:
        assert "KEY VALUE" in r.stdout and "--opts" in r.stdout and "--config-file" in r.stdout


@pytest.mark.parametrize("module", MODULES)
def test_every_flag_has_help(module):
    for action in _parser(module)._actions:
        assert action.help and action.help.strip(), (module, action.option_strings or action.dest)


@pytest.mark.parametrize("module", MODULES)
def test_mistyped_flag_is_one_line_with_did_you_mean(module, capsys):
    wrong = {"plot_metrics": "--ouptut", "check": "--levle", "stats": "--methd"}.get(
        module, "--config-fiel"
    )
    with pytest.raises(SystemExit) as exit_info:
        _parse(module, [*VALID[module], wrong, "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(ERROR_PREFIX), err
    assert f"unrecognized flag {wrong} (did you mean --" in err


@pytest.mark.parametrize("module", TAKES_CONFIG)
def test_positional_overrides_and_the_opts_alias_agree(module):
    pairs = ["MODEL.WEIGHTS", "w.pth", "SOLVER.MAX_ITER", "2"]
    positional = _parse(module, [*VALID[module], *pairs])
    alias = _parse(module, [*VALID[module], "--opts", *pairs])
    assert positional.opts == alias.opts == pairs
    assert _parse(module, VALID[module]).opts == []
    if module == "train":  # detectron2's parser gives the same overrides
        import seg_plugins  # noqa: F401

        # isort: split
        from detectron2.engine import default_argument_parser

        assert default_argument_parser().parse_args([*VALID[module], *pairs]).opts == pairs


@pytest.mark.parametrize("module", TAKES_CONFIG)
def test_a_flag_after_the_overrides_is_named(module, capsys):
    flag = "--config-file"
    with pytest.raises(SystemExit):
        _parse(module, [*VALID[module], "SOLVER.MAX_ITER", "2", flag, "c.yaml"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"flag {flag} after the KEY VALUE overrides" in err


@pytest.mark.parametrize("module", ["predict", "export", "visualize"])
def test_one_output_flag_with_its_alias(module):
    argv = VALID[module]
    i = argv.index("-o")
    for spelling in ("-o", "--output", "--output-dir"):
        args = _parse(module, [*argv[:i], spelling, "there", *argv[i + 2 :]])
        assert args.output == "there"


def test_list_arguments_give_back_the_trailing_overrides():
    args = _parse("predict", ["--weights", "m.pth", "-o", "o", "--input", "a.png", "b.png",
                              "MODEL.DEVICE", "cpu"])  # fmt: skip
    assert args.input == ["a.png", "b.png"] and args.opts == ["MODEL.DEVICE", "cpu"]
    assert split_overrides(["shapes_val", "x_y", "SEED", "3"]) == (
        ["shapes_val", "x_y"],
        ["SEED", "3"],
    )


def test_predict_and_export_need_weights_or_a_config(capsys):
    for module, argv in (("predict", ["--input", "a.png", "-o", "o"]), ("export", ["-o", "o"])):
        with pytest.raises(SystemExit):
            _parse(module, argv)
        assert "give --weights" in capsys.readouterr().err


def test_train_flags_are_detectron2_s():
    """Same names, destinations, defaults and types as detectron2's default_argument_parser
    (its --dist-url default, a per-user port, is computed when the run starts)."""
    import seg_plugins  # noqa: F401  (repairs detectron2 before its engine is imported)

    # isort: split
    from detectron2.engine import default_argument_parser

    actions = _parser("train")._actions
    # --num-processes shares --num-gpus' destination (default SUPPRESS): the flag with the
    # default stands for the destination; the option strings of both count.
    ours = {a.dest: a for a in actions if a.default is not argparse.SUPPRESS or a.dest == "help"}
    strings = {d: {s for a in actions if a.dest == d for s in a.option_strings} for d in ours}
    for theirs in default_argument_parser()._actions:
        mine = ours[theirs.dest]
        assert set(theirs.option_strings) <= strings[theirs.dest], theirs.dest
        # The overrides are split off before argparse parses (ToolParser.parse_args): our
        # positional is "*" and always a list where detectron2's is a REMAINDER.
        if theirs.dest not in ("dist_url", "help", "opts"):
            assert (mine.default, mine.type, mine.nargs) == (
                theirs.default,
                theirs.type,
                theirs.nargs,
            ), theirs.dest


def test_console_scripts_are_declared_in_setup_py():
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    for script, module in TOOLS.items():
        target = "console" if module == "train" else "main"
        assert f'"{script}=seg_plugins_cli.{module}:{target}"' in text
