"""tools/gpu_kit.py, the CPU half: the kit is prepared (wheels for CPython 3.12 that pip's
resolver accepts with what the device provides), installs what is missing, unpacks
detectron2, and its run logic passes end to end in tiny CPU mode. The GPU half runs only on a
lent GPU machine (docs/gpu.md)."""

import json
import os
import shutil

import pytest

from tools import gpu_kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("kit"))
    manifest = gpu_kit.prepare(folder, check=True)  # the resolver's dry run included
    return folder, manifest


def test_prepare_collects_every_package_for_python_3_12(kit):
    folder, manifest = kit
    assert set(manifest["packages"]) == set(gpu_kit.KIT_PACKAGES)
    for name, wheel in manifest["wheels"].items():
        assert os.path.isfile(os.path.join(folder, "wheels", wheel)), name
        assert wheel.endswith("-none-any.whl") or "cp312" in wheel or "abi3" in wheel, wheel
        assert f"-{manifest['packages'][name]}-" in wheel  # the project venv's version
    assert os.path.isfile(os.path.join(folder, manifest["detectron2"]))
    assert 0 < manifest["mib"] <= gpu_kit.MAX_KIT_MIB
    with open(os.path.join(folder, "manifest.json")) as f:
        assert json.load(f) == manifest


def test_the_resolver_check_names_a_dependency_the_kit_lacks(kit):
    folder, manifest = kit
    lacking = dict(manifest, packages=dict(manifest["packages"]))
    del lacking["packages"]["tqdm"]  # fvcore, iopath and cityscapesscripts need it
    with pytest.raises(gpu_kit.KitError, match=r"need \['tqdm'\], neither in the kit"):
        gpu_kit.check_resolution(folder, lacking)


def test_install_puts_only_missing_packages_into_the_target(kit, tmp_path, monkeypatch):
    folder, _ = kit
    real = gpu_kit.importlib.metadata.version

    def version(name):  # as on the device, where termcolor is not installed
        if name == "termcolor":
            raise gpu_kit.importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(gpu_kit.importlib.metadata, "version", version)
    site = str(tmp_path / "site")
    assert gpu_kit.install(folder, site) == ["termcolor"]
    assert os.path.isdir(os.path.join(site, "termcolor"))
    assert not os.path.exists(os.path.join(site, "fvcore"))


def test_detectron2_without_nvcc_runs_without_compiled_ops(kit, tmp_path, monkeypatch):
    folder, _ = kit
    monkeypatch.setattr(gpu_kit.shutil, "which", lambda name: None)
    line = gpu_kit.setup_detectron2(folder, str(tmp_path), 10, dict(os.environ))
    assert "no nvcc" in line and "seg_plugins.compat" in line
    src = tmp_path / "detectron2-src"
    assert (src / "setup.py").is_file() and (src / "detectron2" / "__init__.py").is_file()
    assert (src / "detectron2" / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml").is_file()


def test_tiny_cpu_run_passes_every_step(kit, tmp_path):
    folder, _ = kit
    out = tmp_path / "out"
    results = gpu_kit.run(str(out), tiny=True, kit=folder)
    assert [r["step"] for r in results] == list(gpu_kit.STEPS)
    assert {r["step"]: r["status"] for r in results} == dict.fromkeys(gpu_kit.STEPS, "ok")
    figures = {r["step"]: "\n".join(r["figures"]) for r in results}
    assert "passed" in figures["tests"]
    assert "mIoU" in figures["demo"] and "AP" in figures["mask_rcnn"]
    assert (
        "Identical numbers (mIoU, fwIoU, mACC, pACC, per-class IoU and ACC): yes"
        in (figures["evaluator"])
    )
    assert "U-Net training step" in figures["benchmark"]
    report = (out / "gpu_report.md").read_text()
    assert report.startswith("# GPU kit report (tiny CPU mode")
    for step in gpu_kit.STEPS:
        assert f"| {step} | ok |" in report
        assert (out / "logs" / f"{step}.log").is_file()
    shutil.rmtree(os.path.join(folder, "work"), ignore_errors=True)


def test_a_step_over_its_budget_is_stopped_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(
        gpu_kit, "_step_commands", lambda tiny, device, work: {"tests": ["sleep", "30"]}
    )
    monkeypatch.setitem(gpu_kit.BUDGETS, "tests", 1)
    [result] = gpu_kit.run_steps(
        ["tests"], tiny=False, device="cuda", out=str(tmp_path), work=str(tmp_path), env={}
    )
    assert result["status"] == "over its 1 s budget, stopped" and result["seconds"] < 10
