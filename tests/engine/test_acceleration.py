"""Speed options (seg_plugins.engine.acceleration): mixed precision in training and
evaluation, inference_mode, channels-last, torch.compile. Each keeps the numbers equal, or
within a stated tolerance for reduced precision."""

import itertools
import os

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from seg_plugins import add_seg_plugins_config
from seg_plugins.data import register_shapes
from seg_plugins.engine import Trainer
from seg_plugins.engine.acceleration import (
    InferenceRunner,
    _to_float32,
    compile_model,
    to_channels_last,
)
from seg_plugins.engine.loop import TrainLoop, amp_dtype

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNET_CFG = os.path.join(REPO, "configs", "shapes", "unet_shapes.yaml")
FCN_CFG = os.path.join(REPO, "configs", "shapes", "fcn_R18_shapes.yaml")
NAME = "shapes_accel"


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    register_shapes(NAME, root=str(root), num_train=4, num_val=2, image_size=64, seed=5)
    return root


def _cfg(*opts, config_file=UNET_CFG, output_dir=""):
    cfg = get_cfg()
    add_seg_plugins_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "DATASETS.TRAIN", (f"{NAME}_train",),
            "DATASETS.TEST", (f"{NAME}_val",),
            "DATALOADER.NUM_WORKERS", 0,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.MAX_ITER", 2,
            "SOLVER.WARMUP_ITERS", 0,
            "TEST.EVAL_PERIOD", 0,
            "TEST.SEM_SEG_VIS.NUM_IMAGES", 0,
            "OUTPUT_DIR", str(output_dir),
            *opts,
        ]
    )  # fmt: skip
    if "MODEL.UNET.BASE_CHANNELS" not in opts and config_file == UNET_CFG:
        cfg.merge_from_list(["MODEL.UNET.BASE_CHANNELS", 8, "MODEL.UNET.DEPTH", 2])
    return cfg


def _batch(n=2, size=32, classes=4, seed=0):
    """Random images whose label is a function of the pixels (the red value's quarter), so
    that gradients carry signal rather than the noise of random labels."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, size, size)
    images = [torch.randint(0, 256, shape, generator=g, dtype=torch.uint8) for _ in range(n)]
    return [{"image": x, "sem_seg": (x[0].long() * classes) // 256} for x in images]


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg)


# ----------------------------------------------------------------------------- precision
def test_amp_dtype_by_device_and_name():
    assert amp_dtype("auto", "cuda") == torch.float16  # detectron2's AMP
    assert amp_dtype("auto", "cpu") == torch.bfloat16
    assert amp_dtype("bfloat16", "cuda") == torch.bfloat16
    assert amp_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION='fp8'.*'auto'"):
        amp_dtype("fp8", "cpu")


def _one_step(trainer_cls, cfg, batch, **kwargs):
    model = _model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = trainer_cls(model, itertools.repeat(batch), optimizer, **kwargs)
    seen = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.iter = 0
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as storage:
        trainer.run_step()
        loss = storage.history("total_loss").latest()
    return model, loss, seen


def test_bf16_autocast_step_matches_the_float32_step_within_tolerance():
    cfg = _cfg()
    batch = _batch()
    ref_model, ref_loss, ref_dtypes = _one_step(SimpleTrainer, cfg, batch)
    amp_model, amp_loss, amp_dtypes = _one_step(TrainLoop, cfg, batch, precision="auto")
    assert ref_dtypes == [torch.float32] and amp_dtypes == [torch.bfloat16]
    # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding, a few % over a network.
    assert amp_loss == pytest.approx(ref_loss, rel=0.03)
    cos = torch.nn.functional.cosine_similarity
    for (name, p_ref), p_amp in zip(ref_model.named_parameters(), amp_model.parameters()):
        assert p_amp.dtype == p_amp.grad.dtype == torch.float32, name  # float32 master weights
        # bfloat16 rounds each activation to 8 bits of mantissa: per parameter the gradient
        # keeps its direction (cosine >= 0.87 measured, first BN layer lowest; 1.0 at the
        # classifier), the whole gradient more so.
        cosine = cos(p_amp.grad.flatten(), p_ref.grad.flatten(), dim=0)
        assert cosine >= 0.8, f"{name}: gradient cosine similarity {cosine:.3f}"
    whole = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (ref_model, amp_model)]
    assert cos(*whole, dim=0) >= 0.97


def test_train_loop_needs_no_scaler_for_bfloat16():
    cfg = _cfg()
    model = _model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = TrainLoop(model, itertools.repeat(_batch()), opt, precision="bfloat16")
    assert trainer.grad_scaler is None and "grad_scaler" not in trainer.state_dict()
    with pytest.raises(ValueError, match="PRECISION"):
        TrainLoop(model, itertools.repeat(_batch()), opt, precision="half")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 loss scaling runs on CUDA")
def test_float16_on_cuda_scales_the_loss_and_saves_the_scaler():
    cfg = _cfg("MODEL.DEVICE", "cuda")
    model = _model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = TrainLoop(model, itertools.repeat(_batch()), opt, precision="auto")
    assert trainer.dtype == torch.float16 and trainer.grad_scaler is not None
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    state = trainer.state_dict()
    assert "grad_scaler" in state
    trainer.load_state_dict(state)


def test_trainer_with_amp_trains_on_cpu_and_evaluates_with_test_amp(tiny_shapes, tmp_path):
    cfg = _cfg("SOLVER.AMP.ENABLED", True, "TEST.AMP.ENABLED", True, output_dir=tmp_path)
    trainer = Trainer(cfg)
    assert isinstance(trainer.run_loop, TrainLoop)
    assert trainer.run_loop.dtype == torch.bfloat16
    assert trainer.cfg.SOLVER.AMP.ENABLED  # the config the run reports is the one it was given
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = Trainer.test(trainer.cfg, trainer.model)
    assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0
    assert trainer.storage.history("total_loss").latest() > 0


def test_detectron2s_amp_config_key_reaches_the_autocast_trainer_not_amptrainer(
    tiny_shapes, tmp_path
):
    # detectron2 v0.6's AMPTrainer asserts CUDA in its first step: on a CPU machine the plain
    # SOLVER.AMP.ENABLED config must not build it.
    from detectron2.engine import AMPTrainer

    trainer = Trainer(_cfg("SOLVER.AMP.ENABLED", True, output_dir=tmp_path))
    assert not isinstance(trainer.run_loop, AMPTrainer)
    assert trainer.run_loop.model is trainer.model


# ----------------------------------------------------------------------------- inference
def test_inference_runner_is_exact_in_float32_and_runs_in_inference_mode():
    cfg = _cfg()
    model = _model(cfg).eval()
    inputs = [{"image": b["image"]} for b in _batch(n=1)]
    with torch.no_grad():
        expected = model(inputs)[0]["sem_seg"]
    out = InferenceRunner(model)(inputs)[0]["sem_seg"]
    assert torch.is_inference(out) and out.dtype == torch.float32
    assert torch.equal(out, expected)


def test_inference_runner_bf16_outputs_float32_close_to_float32():
    cfg = _cfg()
    model = _model(cfg).eval()
    inputs = [{"image": b["image"]} for b in _batch(n=1, size=64)]
    with torch.no_grad():
        expected = model(inputs)[0]["sem_seg"]
    out = InferenceRunner(model, torch.bfloat16)(inputs)[0]["sem_seg"]
    assert out.dtype == torch.float32
    scale = expected.abs().max()
    assert (out - expected).abs().max() <= 0.05 * scale
    agree = (out.argmax(0) == expected.argmax(0)).float().mean()
    assert agree >= 0.9


def test_float32_cast_covers_instances_and_nested_outputs():
    inst = Instances((4, 4))
    inst.pred_boxes = Boxes(torch.ones(2, 4, dtype=torch.bfloat16))
    inst.scores = torch.ones(2, dtype=torch.float16)
    inst.pred_classes = torch.tensor([1, 2])
    out = _to_float32([{"instances": inst, "sem_seg": torch.ones(2, 2, dtype=torch.bfloat16)}])
    assert out[0]["instances"].pred_boxes.tensor.dtype == torch.float32
    assert out[0]["instances"].scores.dtype == torch.float32
    assert out[0]["instances"].pred_classes.dtype == torch.int64
    assert out[0]["sem_seg"].dtype == torch.float32


def test_mask_rcnn_evaluates_through_the_inference_runner(tiny_shapes, tmp_path):
    # COCOEvaluator and detectron2's postprocessing on outputs made in inference mode (an
    # in-place update of an inference tensor outside it would raise) and in bfloat16.
    cfg = _cfg(
        "TEST.AMP.ENABLED", True,
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        config_file=os.path.join(REPO, "configs", "shapes", "mask_rcnn_R18_FPN_GN_shapes.yaml"),
        output_dir=tmp_path,
    )  # fmt: skip
    model = Trainer.build_model(cfg)
    results = Trainer.test(cfg, model)
    assert "segm" in results and "bbox" in results


# ----------------------------------------------------------------------------- layout
def test_channels_last_keeps_outputs_and_checkpoints():
    cfg = _cfg()
    model = _model(cfg).eval()
    cl_cfg = _cfg("MODEL.CHANNELS_LAST", True)
    cl_model = Trainer.build_model(cl_cfg).eval()
    cl_model.load_state_dict(model.state_dict())
    convs = [m for m in cl_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
    ), "load_state_dict must keep the channels-last layout"
    inputs = [{"image": b["image"]} for b in _batch(n=2, size=48)]
    with torch.no_grad():
        expected = model(inputs)
        got = cl_model(inputs)
    for e, g in zip(expected, got):
        assert torch.allclose(g["sem_seg"], e["sem_seg"], atol=1e-4, rtol=1e-4)
    # and training: the same loss
    model.train(), cl_model.train()
    batch = _batch()
    ref = sum(model(batch).values())
    out = sum(cl_model(batch).values())
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    assert to_channels_last(model) is model


# ----------------------------------------------------------------------------- compile
def test_compile_keeps_losses_gradients_and_state_dict_keys():
    cfg = _cfg()
    eager = _model(cfg).train()
    compiled = _model(cfg).train()
    keys = list(compiled.state_dict())
    # aot_eager traces forward and backward as inductor does, without generating code
    # (seconds instead of a minute on a 2-core CPU).
    assert compile_model(compiled, backend="aot_eager") == ["backbone", "sem_seg_head"]
    assert list(compiled.state_dict()) == keys
    batch = _batch()
    for model in (eager, compiled):
        loss = sum(model(batch).values())
        loss.backward()
        model.loss = loss.item()
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-5)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


def test_compile_refuses_a_model_without_compilable_parts():
    with pytest.raises(ValueError, match="MODEL.COMPILE.ENABLED"):
        compile_model(torch.nn.Linear(2, 2))


def test_trainer_trains_a_compiled_model(tiny_shapes, tmp_path):
    cfg = _cfg(
        "MODEL.COMPILE.ENABLED", True, "MODEL.COMPILE.BACKEND", "aot_eager",
        "SOLVER.CHECKPOINT_PERIOD", 1, output_dir=tmp_path,
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert set(saved["model"]) == set(build_model(_cfg()).state_dict())


# ----------------------------------------------------------------------------- host syncs
@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist on CUDA only")
def test_training_step_has_no_host_device_sync_on_cuda():
    cfg = _cfg("MODEL.DEVICE", "cuda")
    model = _model(cfg).train()
    batch = [{k: v.cuda() for k, v in x.items()} for x in _batch()]
    sum(model(batch).values()).backward()  # warm-up (cuDNN autotuning may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = sum(model(batch).values())
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bad_labels_on_cpu_still_name_the_values():
    cfg = _cfg()
    model = _model(cfg).train()
    batch = _batch()
    batch[0]["sem_seg"][0, 0] = 9
    with pytest.raises(ValueError, match=r"targets contain \[9\]"):
        model(batch)


def test_labels_are_checked_on_the_cpu_before_moving_to_an_accelerator(monkeypatch):
    # The loss on an accelerator has only an asynchronous assert (no host sync per step);
    # the model checks the CPU targets first. "meta" stands in for the accelerator here.
    from seg_plugins.modeling.meta_arch.base import EncoderDecoderSegmentor

    model = _model(_cfg()).train()
    monkeypatch.setattr(
        EncoderDecoderSegmentor, "device", property(lambda self: torch.device("meta"))
    )
    batch = _batch()
    batch[1]["sem_seg"][3, 3] = -2
    with pytest.raises(ValueError, match=r"targets contain \[-2\].*classes 0\.\.3"):
        model(batch)
