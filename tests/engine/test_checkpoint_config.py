"""Weights that carry their config (seg_plugins.engine.checkpoint): the Trainer's checkpoints
hold the run's config as YAML text; Predictor.from_checkpoint and export work from the .pth
alone; an explicit config file wins, the differences logged; checkpoints without a config
(older ones) load with their config file and fail clearly without; the saved YAML is parsed
safely; detectron2's own checkpointer still loads and resumes the files."""

import logging
import os
import pickle
import shutil

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import numpy as np
import pytest
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from seg_plugins import Predictor, add_seg_plugins_config
from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer
from seg_plugins.engine.checkpoint import (
    AtomicCheckpointer,
    CheckpointError,
    SafeCheckpointer,
    config_difference,
    config_from_checkpoint,
    saved_config,
)
from seg_plugins.export import export_torchscript, max_abs_difference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
NAME = "shapes_ckpt_config"
MODULE_LOGGER = "seg_plugins.engine.checkpoint"


def _cfg(output_dir, *opts):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(UNET_CFG)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.UNET.BASE_CHANNELS", 4,  # not the defaults: a model built without the
            "MODEL.UNET.DEPTH", 2,  # saved config would not fit the weights
            "DATASETS.TRAIN", (f"{NAME}_train",),
            "DATASETS.TEST", (f"{NAME}_val",),
            "DATALOADER.NUM_WORKERS", 0,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.MAX_ITER", 2,
            "SOLVER.CHECKPOINT_PERIOD", 1,
            "SOLVER.WARMUP_ITERS", 0,
            # the Trainer switches it off while detectron2 builds its parts: the checkpoint
            # must carry the config as given, not that working copy
            "SOLVER.AMP.ENABLED", True,
            "TEST.EVAL_PERIOD", 0,
            "TEST.SEM_SEG.FLIP", True,  # changes the logits: the Predictor must read it
            "TEST.SEM_SEG_VIS.NUM_IMAGES", 0,
            "OUTPUT_DIR", str(output_dir),
            *opts,
        ]
    )  # fmt: skip
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, output folder) of a two-iteration Trainer run: model_0000000.pth and
    model_final.pth."""
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(NAME, root=str(root), num_train=4, num_val=2, image_size=64, seed=7)
    out = tmp_path_factory.mktemp("run")
    cfg = _cfg(out)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, out


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (37, 50, 3)).astype(np.uint8)  # odd size: padded, cropped


@pytest.fixture
def log(caplog):
    """caplog on this module's logger, whether or not an earlier test's setup_logger
    stopped the "seg_plugins" loggers from propagating (records counted once)."""
    logger = logging.getLogger(MODULE_LOGGER)
    propagate = logger.propagate
    logger.addHandler(caplog.handler)
    logger.propagate = False
    with caplog.at_level(logging.INFO, logger=MODULE_LOGGER):
        yield caplog
    logger.removeHandler(caplog.handler)
    logger.propagate = propagate


def _warnings(log) -> list:
    return [
        r.getMessage()
        for r in log.records
        if r.name == MODULE_LOGGER and r.levelno >= logging.WARNING
    ]


def _alone(path, folder) -> str:
    """A copy of the checkpoint in a folder of its own (no config.yaml beside it)."""
    os.makedirs(folder)
    return shutil.copy(path, os.path.join(folder, os.path.basename(path)))


def _old_checkpoint(trained, folder) -> str:
    """The run's weights as a checkpoint of before: {"model": state_dict}, no config."""
    _, out = trained
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    os.makedirs(folder)
    path = os.path.join(folder, "model_final.pth")
    torch.save({"model": state}, path)
    return path


def _with_config_text(trained, folder, text) -> str:
    _, out = trained
    data = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model_final.pth")
    torch.save({"model": data["model"], "config": text}, path)
    return path


# ------------------------------------------------------------------------- what is saved
def test_every_checkpoint_of_the_trainer_carries_the_run_config(trained):
    cfg, out = trained
    for name in ("model_0000000.pth", "model_final.pth"):
        data = torch.load(out / name, map_location="cpu", weights_only=True)
        assert isinstance(data["config"], str)
        assert data["config"] == cfg.dump() == saved_config(str(out / name))
    saved = yaml.safe_load(saved_config(str(out / "model_final.pth")))
    assert saved["SOLVER"]["AMP"]["ENABLED"] is True  # as given, not the Trainer's copy
    rebuilt = config_from_checkpoint(str(out / "model_final.pth"))
    assert config_difference(cfg, rebuilt, ignore=["MODEL.WEIGHTS"]) == []
    assert rebuilt.MODEL.WEIGHTS == str(out / "model_final.pth")


def test_checkpointer_saves_the_config_only_when_given(tmp_path):
    model = torch.nn.Linear(3, 2)
    AtomicCheckpointer(model, str(tmp_path / "plain")).save("m")
    assert saved_config(str(tmp_path / "plain" / "m.pth")) is None
    cfg = _cfg(tmp_path)
    AtomicCheckpointer.from_config(cfg, model, str(tmp_path / "cfg")).save("m")
    assert saved_config(str(tmp_path / "cfg" / "m.pth")) == cfg.dump()
    with pytest.raises(TypeError, match="YAML text"):
        AtomicCheckpointer(model, str(tmp_path), config_yaml=cfg)


# ------------------------------------------------------------------------- from the .pth alone
def test_predictor_from_the_checkpoint_alone_predicts_as_the_original_config(
    trained, image, tmp_path
):
    cfg, out = trained
    expected = Predictor(cfg, str(out / "model_final.pth"))(image)["sem_seg"]
    path = _alone(out / "model_final.pth", tmp_path / "elsewhere")
    predictor = Predictor.from_checkpoint(path)
    assert predictor.cfg.MODEL.UNET.BASE_CHANNELS == 4 and predictor.cfg.TEST.SEM_SEG.FLIP
    torch.testing.assert_close(predictor(image)["sem_seg"], expected, rtol=0, atol=1e-6)
    # opts are merged last, and they matter: without the saved flip TTA the logits change
    plain = Predictor.from_checkpoint(path, opts=["TEST.SEM_SEG.FLIP", False])
    assert not plain.cfg.TEST.SEM_SEG.FLIP
    assert (plain(image)["sem_seg"] - expected).abs().max() > 1e-4


def test_export_from_the_checkpoint_alone_matches_the_original_model(trained, tmp_path):
    cfg, out = trained
    path = _alone(out / "model_final.pth", tmp_path / "elsewhere")
    restored = config_from_checkpoint(path, opts=["TEST.SEM_SEG.FLIP", False])
    model = build_model(restored).eval()
    SafeCheckpointer.from_config(restored, model).load(restored.MODEL.WEIGHTS)
    exported = export_torchscript(model, str(tmp_path / "model.ts"), example_size=(32, 32))

    reference = build_model(cfg).eval()  # the original config and the run's weights
    SafeCheckpointer.from_config(cfg, reference).load(str(out / "model_final.pth"))
    assert max(max_abs_difference(exported, reference, [(37, 50)]).values()) < 1e-4


# ------------------------------------------------------------------------- old checkpoints
def test_old_checkpoint_without_config_works_with_its_config_file(trained, image, tmp_path):
    cfg, out = trained
    old = _old_checkpoint(trained, tmp_path / "old")
    assert saved_config(old) is None
    config_file = tmp_path / "run_config.yaml"
    config_file.write_text(cfg.dump())
    expected = Predictor(cfg, str(out / "model_final.pth"))(image)["sem_seg"]
    predictor = Predictor.from_checkpoint(old, config_file=str(config_file))
    torch.testing.assert_close(predictor(image)["sem_seg"], expected, rtol=0, atol=1e-6)


def test_old_checkpoint_without_config_file_names_the_fix(trained, tmp_path):
    old = _old_checkpoint(trained, tmp_path / "old")
    with pytest.raises(CheckpointError, match=r"holds no config.*--config-file path/config\.yaml"):
        Predictor.from_checkpoint(old)
    beside = tmp_path / "old" / "config.yaml"  # what a run writes into its OUTPUT_DIR
    beside.write_text("MODEL:\n  DEVICE: cpu\n")
    with pytest.raises(CheckpointError, match=f"--config-file {beside} "):
        config_from_checkpoint(old)


def test_model_zoo_pkl_holds_no_config(tmp_path):
    path = tmp_path / "model_final_abc.pkl"
    blob = {"model": {"conv.weight": np.zeros((2, 3), np.float32)}, "__author__": "zoo"}
    path.write_bytes(pickle.dumps(blob, protocol=2))
    assert saved_config(str(path)) is None
    with pytest.raises(CheckpointError, match="holds no config"):
        config_from_checkpoint(str(path))


# ------------------------------------------------------------------------- explicit config wins
def test_explicit_config_file_wins_and_each_difference_is_logged(trained, log, tmp_path):
    cfg, out = trained
    weights = str(out / "model_final.pth")
    changed = cfg.clone()
    changed.merge_from_list(["TEST.SEM_SEG.FLIP", False, "SOLVER.BASE_LR", 0.5])
    changed.merge_from_list(["MODEL.WEIGHTS", "elsewhere.pth"])  # never reported
    config_file = tmp_path / "changed.yaml"
    config_file.write_text(changed.dump())

    predictor = Predictor.from_checkpoint(weights, config_file=str(config_file))
    assert not predictor.cfg.TEST.SEM_SEG.FLIP and predictor.cfg.SOLVER.BASE_LR == 0.5
    assert predictor.cfg.MODEL.WEIGHTS == weights
    warned = _warnings(log)
    head = f"config file {config_file} differs from the config saved in {weights}: "
    assert sorted(warned) == [
        head + "SOLVER.BASE_LR: 0.003 -> 0.5",
        head + "TEST.SEM_SEG.FLIP: True -> False",
    ]


def test_a_long_difference_is_cut_with_a_count(trained, log, tmp_path):
    cfg, out = trained
    weights = str(out / "model_final.pth")
    config_file = tmp_path / "defaults.yaml"
    config_file.write_text("SEED: 5\n")  # every key of the run's config back to default
    default = config_from_checkpoint(weights, str(config_file))
    differing = config_difference(cfg, default, ignore=["MODEL.WEIGHTS"])
    assert len(differing) > 25  # the cap is exercised
    warned = _warnings(log)
    assert len(warned) == 21
    assert warned[:20] == [
        f"config file {config_file} differs from the config saved in {weights}: {line}"
        for line in differing[:20]
    ]
    assert warned[20].endswith(f"... and {len(differing) - 20} more")


def test_config_difference_lists_leaves_both_ways():
    a, b = get_cfg(), get_cfg()
    a.MODEL.DEVICE = "cpu"
    b.MODEL.DEVICE = "cuda:1"
    b.SOLVER.STEPS = [1, 2]  # a list against the default's tuple
    b.INPUT.MIN_SIZE_TRAIN = tuple(a.INPUT.MIN_SIZE_TRAIN)  # a tuple equals itself as a list
    b.MODEL.NEW_KEY = 3
    assert config_difference(a, b) == [
        "MODEL.DEVICE: 'cpu' -> 'cuda:1'",
        "MODEL.NEW_KEY: <not set> -> 3",
        "SOLVER.STEPS: [30000] -> [1, 2]",
    ]
    assert config_difference(a, b, ignore=["MODEL.DEVICE", "MODEL.NEW_KEY"]) == [
        "SOLVER.STEPS: [30000] -> [1, 2]"
    ]


# ------------------------------------------------------------------------- safe parsing
def test_a_python_object_tag_in_the_saved_config_is_refused_not_run(trained, log, tmp_path):
    cfg, _ = trained
    marker = tmp_path / "ran"
    text = f"MODEL:\n  DEVICE: !!python/object/apply:os.system ['touch {marker}']\n"
    path = _with_config_text(trained, tmp_path / "tagged", text)
    assert saved_config(path) == text  # a plain string in the checkpoint
    with pytest.raises(CheckpointError, match="not plain YAML.*refused.*--config-file"):
        Predictor.from_checkpoint(path)
    assert not marker.exists()
    # with a config file the tagged text is only compared, and not even that
    config_file = tmp_path / "run.yaml"
    config_file.write_text(cfg.dump())
    assert config_from_checkpoint(path, str(config_file)).MODEL.DEVICE == "cpu"
    assert not marker.exists()
    assert "was not compared" in log.text and "not plain YAML" in log.text


def test_a_pickled_config_object_is_refused(trained, tmp_path):
    cfg, out = trained
    path = tmp_path / "pickled.pth"
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    torch.save({"model": state, "config": cfg}, path)  # a CfgNode: full pickle to read it
    with pytest.raises(CheckpointError, match=f"checkpoint {path} contains Python objects"):
        saved_config(str(path))


def test_unknown_keys_name_the_key_and_the_fix(trained, tmp_path):
    cfg, _ = trained
    text = cfg.dump().replace("MODEL:\n", "MODEL:\n  MY_PROJECT_KEY: 3\n", 1)
    path = _with_config_text(trained, tmp_path / "custom", text)
    with pytest.raises(CheckpointError, match=r"key MODEL\.MY_PROJECT_KEY.*base_cfg=.*config-file"):
        config_from_checkpoint(path)
    base = add_seg_plugins_config(get_cfg())
    base.MODEL.MY_PROJECT_KEY = 0  # the project's add_*_config
    assert config_from_checkpoint(path, base_cfg=base).MODEL.MY_PROJECT_KEY == 3


def test_missing_or_corrupt_checkpoint_is_named(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=f"checkpoint {missing} not found"):
        saved_config(missing)
    corrupt = tmp_path / "cut.pth"
    corrupt.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(CheckpointError, match=f"checkpoint {corrupt} .*truncated or corrupt"):
        config_from_checkpoint(str(corrupt))


# ------------------------------------------------------------------------- detectron2 and resume
def test_stock_detectron2_checkpointer_loads_and_resumes_the_new_files(trained, tmp_path):
    cfg, out = trained
    run = shutil.copytree(out, tmp_path / "run")
    saved = torch.load(run / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    model = build_model(cfg)
    checkpoint = DetectionCheckpointer(model, save_dir=str(run)).resume_or_load("", resume=True)
    assert checkpoint["iteration"] == 1 and checkpoint["config"] == cfg.dump()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[name])


def test_trainer_resumes_from_a_checkpoint_with_its_config(trained, tmp_path):
    _, out = trained
    run = shutil.copytree(out, tmp_path / "run")
    cfg = _cfg(run, "SOLVER.MAX_ITER", 3)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    trainer.train()
    assert saved_config(str(run / "model_final.pth")) == cfg.dump()  # the resumed run's
