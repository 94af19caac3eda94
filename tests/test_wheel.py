"""The package as users install it: a wheel built from the sources, installed into a fresh
virtual environment (which reuses this environment's torch, detectron2 and the other
dependencies through a path file, so nothing is downloaded), and run OUTSIDE the repository:
every console script answers --help, the shipped configs are found by name, a shipped config
trains two iterations and the checkpoint alone predicts."""

import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import yaml

from seg_plugins_cli import TOOLS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "README.md", "seg_plugins", "seg_plugins_cli", "configs")


def _check(cmd, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a working folder outside the repository) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: the build writes build/ and *.egg-info beside setup.py
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            os.makedirs(src, exist_ok=True)
            shutil.copy(path, src / name)
    pip = [sys.executable, "-m", "pip"]
    _check([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp)])
    (wheel,) = tmp.glob("seg_plugins-*.whl")
    venv = tmp / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = _check([str(python), "-c", code])
    # This environment's packages after the new one's own (a plain path: its .pth files,
    # such as the editable install of seg_plugins, are not processed).
    reuse = sysconfig.get_paths()["purelib"]
    with open(os.path.join(purelib.stdout.strip(), "reuse_project_env.pth"), "w") as f:
        f.write(reuse + "\n")
    _check([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    work = tmp / "work"
    work.mkdir()
    return venv / "bin", work


def test_the_installed_package_is_the_wheel_s(installed):
    bin_dir, work = installed
    r = _check(
        [str(bin_dir / "python"), "-c",
         "import seg_plugins, seg_plugins_cli; print(seg_plugins.__file__); "
         "print(seg_plugins_cli.__file__)"],
        cwd=work,
    )  # fmt: skip
    for line in r.stdout.split():
        assert line.startswith(str(bin_dir.parent)) and "site-packages" in line, line


@pytest.mark.parametrize("script", sorted(TOOLS))
def test_every_console_script_answers_help(installed, script):
    bin_dir, work = installed
    r = _check([str(bin_dir / script), "--help"], cwd=work)
    assert r.stdout.startswith("usage:")


def test_shipped_configs_are_found_by_name(installed):
    bin_dir, work = installed
    code = (
        "from seg_plugins import model_zoo\n"
        "names = model_zoo.list_configs()\n"
        "assert 'shapes/unet_shapes.yaml' in names and 'lazy/unet_shapes.py' in names, names\n"
        "assert '/site-packages/' in model_zoo.get_config_file('Base-UNet.yaml')\n"
        "cfg = model_zoo.get_config('configs/shapes/deeplabv3plus_R18_shapes.yaml')\n"
        "assert cfg.MODEL.META_ARCHITECTURE == 'DeepLabV3Plus', cfg.MODEL.META_ARCHITECTURE\n"
        "lazy = model_zoo.get_config('lazy/unet_shapes.py')\n"
        "assert 'model' in lazy\n"
        "try:\n"
        "    model_zoo.get_config_file('shapes/unet_shape.yaml')\n"
        "except FileNotFoundError as e:\n"
        "    assert 'did you mean shapes/unet_shapes.yaml' in str(e), e\n"
        "print('OK')\n"
    )
    assert "OK" in _check([str(bin_dir / "python"), "-c", code], cwd=work).stdout


def _tiny_spec(work) -> str:
    """A 4-class sem_seg_folder dataset spec over generated shapes images (64 px)."""
    from seg_plugins.data.shapes import generate_shapes

    root = str(work / "data")
    for split, n in (("train", 4), ("val", 2)):
        folder = generate_shapes(root, split, num_images=n, image_size=64, seed=5, tag="wheel")
    spec = {
        "name": "wheelshapes",
        "format": "sem_seg_folder",
        "classes": ["background", "circle", "triangle", "square"],
        "ignore_label": 255,
        "root": folder,
        "splits": {s: {"images": f"{s}/images", "masks": f"{s}/sem_seg"} for s in ("train", "val")},
    }
    path = work / "wheelshapes.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.slow
def test_a_shipped_config_trains_and_its_checkpoint_alone_predicts(installed):
    bin_dir, work = installed
    spec = _tiny_spec(work)
    out = work / "run"
    _check(
        [
            str(bin_dir / "seg-plugins-train"),
            "--config-file", "shapes/unet_shapes.yaml",  # a shipped config, by name
            "DATASETS.SPECS", f"('{spec}',)",
            "DATASETS.TRAIN", "('wheelshapes_train',)",
            "DATASETS.TEST", "('wheelshapes_val',)",
            "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
            "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.UNET.BASE_CHANNELS", "4", "MODEL.UNET.DEPTH", "2",
            "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out),
        ],
        cwd=work,
    )  # fmt: skip
    weights = out / "model_final.pth"
    assert weights.is_file()
    images = sorted((work / "data").glob("shapes_wheel/val/images/*.png"))
    _check(
        [str(bin_dir / "seg-plugins-predict"), "--weights", str(weights),
         "--input", str(images[0]), "-o", str(work / "preds")],
        cwd=work,
    )  # fmt: skip
    from seg_plugins.data.io import read_label

    label = read_label(str(work / "preds" / f"{images[0].stem}.png"))
    assert label.shape == (64, 64) and set(np.unique(label)) <= {0, 1, 2, 3}
