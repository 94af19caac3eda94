"""The command lines of seg-plugins-check, -stats, -visualize and -plot-metrics
(seg_plugins_cli): parsed with the standard library alone, dataset names and flags in any
order before the KEY VALUE overrides, one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from seg_plugins_cli import check, plot_metrics, stats, visualize

TOOLS = ("check", "stats", "visualize", "plot_metrics")


def _error(capsys, parse, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seg_plugins: error: "), err
    return err[0]


def test_parsers_do_not_import_torch():
    code = "import sys\n"
    for tool in TOOLS:
        code += f"import seg_plugins_cli.{tool} as m; m.build_parser()\n"
    code += "assert 'torch' not in sys.modules and 'seg_plugins' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["a", "b", "--workers", "1", "INPUT.FORMAT", "L"],
        ["--workers", "1", "a", "b", "INPUT.FORMAT", "L"],
        ["a", "--workers", "1", "b", "INPUT.FORMAT", "L"],
        ["a", "b", "--workers", "1", "--opts", "INPUT.FORMAT", "L"],
        ["a", "b", "--opts", "INPUT.FORMAT", "L"],
    ],
)
def test_check_names_flags_and_overrides(argv):
    args = check.parse_args(argv)
    assert args.names == ["a", "b"] and args.opts == ["INPUT.FORMAT", "L"]
    default = check.build_parser().get_default("workers")
    assert args.workers == (1 if "--workers" in argv else default)


def test_check_defaults():
    args = check.parse_args(["a"])
    assert args.names == ["a"] and args.opts == [] and args.spec == [] and not args.config_file
    assert args.level == "full" and args.max_lines == 50 and args.json == ""


def test_check_mistakes(capsys):
    assert "did you mean --workers?" in _error(capsys, check.parse_args, ["a", "--wokers", "1"])
    assert "required: NAME" in _error(capsys, check.parse_args, ["INPUT.FORMAT", "L"])
    err = _error(capsys, check.parse_args, ["a", "INPUT.FORMAT", "L", "--workers", "1"])
    assert "flag --workers after the KEY VALUE overrides" in err
    err = _error(capsys, check.parse_args, ["a", "--opts", "INPUT.FORMAT", "L", "--json", "x"])
    assert "flag --json after the KEY VALUE overrides" in err
    assert "required: NAME" in _error(capsys, check.parse_args, [])
    assert "invalid choice: 'mid'" in _error(capsys, check.parse_args, ["a", "--level", "mid"])


def test_stats_one_dataset_then_overrides(capsys):
    args = stats.parse_args(["a", "--max-images", "3", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"])
    assert args.dataset == "a" and args.max_images == 3
    assert args.opts == ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"]
    assert stats.parse_args(["a", "--method", "inverse_log"]).method == "inverse_log"
    err = _error(capsys, stats.parse_args, ["a", "b"])
    assert "unexpected b: the KEY VALUE overrides start" in err
    err = _error(capsys, stats.parse_args, ["a", "model.weights", "w.pth"])  # not a key
    assert "unexpected model.weights w.pth: the KEY VALUE overrides start" in err
    err = _error(capsys, stats.parse_args, ["a", "--max-images", "0"])
    assert "--max-images must be >= 1, got 0" in err


def test_visualize_output_flag_and_mistakes(capsys):
    base = ["--config-file", "x.yaml", "--source", "annotation"]
    for flag in ("-o", "--output", "--output-dir"):
        args = visualize.parse_args([*base, flag, "vis", "DATALOADER.NUM_WORKERS", "0"])
        assert args.output == "vis" and args.opts == ["DATALOADER.NUM_WORKERS", "0"]
    assert "--scale must be > 0" in _error(
        capsys, visualize.parse_args, [*base, "-o", "vis", "--scale", "0"]
    )
    assert "--output" in _error(capsys, visualize.parse_args, base)  # required


def test_plot_metrics_output_is_optional():
    assert plot_metrics.parse_args(["m.json"]).output is None
    assert plot_metrics.parse_args(["m.json", "-o", "c.png"]).output == "c.png"
