"""The CUDA parametrization of the loss, model, evaluator and Predictor tests: each computes
the same thing on the CPU and on CUDA and compares. They need a CUDA GPU, so they run in the
GPU kit (tools/gpu_kit.py, docs/gpu.md) and are skipped on the CPU-only CI machines; their
CPU halves are the CPU tests of the same components. Export is not here: export traces and
verifies on the CPU by design (tools/export_model.py sets MODEL.DEVICE cpu)."""

import seg_plugins  # noqa: F401  (first: repairs detectron2 where needed)

# isort: split
import copy

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from seg_plugins.evaluation import SemSegMetricsEvaluator
from seg_plugins.modeling.losses import SEM_SEG_LOSSES, build_sem_seg_loss
from tests.modeling.seg_model_checks import TINY_MODELS, make_inputs, tiny_model_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("loss_type", SEM_SEG_LOSSES)
@pytest.mark.parametrize("num_logits", [1, 4])
def test_losses_and_gradients_equal_on_cuda(loss_type, num_logits):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_logits, 33, 47, generator=g)
    targets = torch.randint(0, max(num_logits, 2), (2, 33, 47), generator=g)
    targets[:, :5] = 255
    loss_fn = build_sem_seg_loss(loss_type, 255, num_classes=num_logits)
    values, grads = [], []
    for device in ("cpu", "cuda"):
        x = logits.to(device).requires_grad_()
        loss = loss_fn(x, targets.to(device))
        loss.backward()
        values.append(loss.item())
        grads.append(x.grad.cpu())
    assert values[1] == pytest.approx(values[0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_models_predict_the_same_on_cuda(case):
    cfg = tiny_model_cfg(case)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    torch.manual_seed(0)
    cpu_model = build_model(cfg).eval()
    cuda_cfg = cfg.clone()
    cuda_cfg.MODEL.DEVICE = "cuda"
    cuda_model = build_model(cuda_cfg).eval()
    cuda_model.load_state_dict(cpu_model.state_dict())
    inputs = make_inputs([(61, 83), (64, 64)], k, with_targets=False)
    with torch.no_grad():
        ours = cpu_model(copy.deepcopy(inputs))
        theirs = cuda_model(copy.deepcopy(inputs))
    for a, b in zip(ours, theirs):
        assert b["sem_seg"].device.type == "cuda"
        # cuDNN's convolution algorithms sum in another order than the CPU's
        torch.testing.assert_close(b["sem_seg"].cpu(), a["sem_seg"], rtol=1e-3, atol=1e-3)
    cuda_model.train()
    losses = cuda_model(make_inputs([(64, 64), (64, 64)], k))
    assert all(torch.isfinite(v) for v in losses.values())


def test_evaluator_gives_the_same_numbers_for_cuda_logits(tmp_path):
    from detectron2.data import DatasetCatalog

    from seg_plugins.data import register_shapes

    names = register_shapes("cuda_eval", root=str(tmp_path), num_train=1, num_val=3,
                            image_size=48)  # fmt: skip
    name = names[3]  # cuda_eval_sem_seg_val
    records = DatasetCatalog.get(name)
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(4, r["height"], r["width"], generator=g) for r in records]
    results = []
    for device in ("cpu", "cuda"):
        evaluator = SemSegMetricsEvaluator(name, distributed=False)
        evaluator.reset()
        for record, x in zip(records, logits):
            evaluator.process([record], [{"sem_seg": x.to(device)}])
        results.append(evaluator.evaluate()["sem_seg"])
    assert results[1].keys() == results[0].keys()
    for key, value in results[0].items():
        assert results[1][key] == value or (np.isnan(value) and np.isnan(results[1][key])), key


def test_predictor_on_cuda_matches_the_cpu(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from seg_plugins import Predictor

    cfg = tiny_model_cfg("UNet")
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = str(tmp_path / "model.pth")
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    image = np.random.default_rng(0).integers(0, 256, (57, 70, 3), dtype=np.uint8)
    cpu = Predictor(cfg, weights, device="cpu")(image, probabilities=True)
    cuda = Predictor(cfg, weights, device="cuda")(image, probabilities=True)
    np.testing.assert_allclose(cuda["probabilities"], cpu["probabilities"], atol=1e-3)
    assert (cuda["classes"] == cpu["classes"]).mean() > 0.99
