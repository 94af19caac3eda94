"""The stand-ins for detectron2's compiled ``_C`` ops, against reference computations."""

import math
import subprocess
import sys

import seg_plugins  # noqa: F401  (first: applies the compat repairs)

# isort: split
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.layers import DeformConv, ModulatedDeformConv, ROIAlignRotated, nms_rotated
from detectron2.layers.rotated_boxes import pairwise_iou_rotated
from detectron2.structures import RotatedBoxes

from seg_plugins import compat
from seg_plugins.compat import ops

FALLBACK = not compat.has_compiled_ops()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")


def test_detectron2_imports_after_seg_plugins():
    r = _run(
        "import seg_plugins, detectron2.modeling, detectron2.data, detectron2.evaluation, "
        "detectron2.engine, detectron2.projects.deeplab"
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not FALLBACK, reason="detectron2 has its compiled _C: nothing to repair")
def test_missing_extension_breaks_plain_detectron2():
    # The breakage the repair exists for: without seg_plugins, detectron2.modeling fails.
    r = _run("import detectron2.modeling")
    assert r.returncode != 0 and "_C" in r.stderr


@pytest.mark.skipif(not FALLBACK, reason="detectron2 has its compiled _C: nothing to repair")
def test_fallback_module_names_missing_ops():
    from detectron2 import _C

    assert "fallback" in _C.get_compiler_version()
    with pytest.raises(RuntimeError, match="COCOevalAccumulate"):
        _C.COCOevalAccumulate()
    from detectron2.evaluation import coco_evaluation
    from pycocotools.cocoeval import COCOeval

    assert coco_evaluation.COCOeval_opt is COCOeval


# ------------------------------------------------------------------------- deformable conv
def _deform_conv_reference(x, offset, weight, bias, stride, pad, dil, dg, mask=None):
    """DCN by explicit bilinear sampling (grid_sample, zero outside) + one big matmul."""
    b, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = c // cin_g
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    off = offset.view(b, dg, kh * kw, 2, ho, wo)
    ys = torch.arange(ho, dtype=x.dtype) * stride - pad
    xs = torch.arange(wo, dtype=x.dtype) * stride - pad
    cols = []
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        py = ys[:, None] + i * dil + off[:, :, k, 0]  # (b, dg, ho, wo)
        px = xs[None, :] + j * dil + off[:, :, k, 1]
        grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], dim=-1)
        xg = x.view(b * dg, c // dg, h, w)
        sampled = F.grid_sample(
            xg,
            grid.view(b * dg, ho, wo, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        ).view(b, dg, c // dg, ho, wo)
        if mask is not None:
            sampled = sampled * mask.view(b, dg, kh * kw, ho, wo)[:, :, k, None]
        cols.append(sampled.reshape(b, c, ho, wo))
    col = torch.stack(cols, dim=2)  # (b, c, k, ho, wo)
    col = col.view(b, groups, cin_g, kh * kw, ho, wo)
    wg = weight.view(groups, cout // groups, cin_g, kh * kw)
    out = torch.einsum("bgckhw,gock->bgohw", col, wg).reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


@pytest.mark.parametrize("groups,dg,stride", [(1, 1, 1), (2, 2, 2)])
def test_deform_conv_matches_reference_forward_and_backward(groups, dg, stride):
    torch.manual_seed(0)
    conv = DeformConv(
        4,
        6,
        kernel_size=3,
        stride=stride,
        padding=1,
        groups=groups,
        deformable_groups=dg,
        bias=False,
    ).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    ho, wo = (9 + 2 - 3) // stride + 1, (11 + 2 - 3) // stride + 1
    offset = (torch.randn(2, 2 * dg * 9, ho, wo, dtype=torch.float64) * 1.5).requires_grad_()
    out = conv(x, offset)
    ref = _deform_conv_reference(x, offset, conv.weight, None, stride, 1, 1, dg)
    torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-7)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), (x, offset, conv.weight))
    ref_grads = torch.autograd.grad((ref * g).sum(), (x, offset, conv.weight))
    for a, b in zip(grads, ref_grads):
        # Bilinear sampling has kinks at integer positions; random offsets avoid them.
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_modulated_deform_conv_matches_reference():
    torch.manual_seed(1)
    conv = ModulatedDeformConv(3, 5, kernel_size=3, padding=1, deformable_groups=1).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    offset = torch.randn(1, 18, 8, 8, dtype=torch.float64)
    mask = torch.rand(1, 9, 8, 8, dtype=torch.float64)
    out = conv(x, offset, mask)
    ref = _deform_conv_reference(x, offset, conv.weight, conv.bias, 1, 1, 1, 1, mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-7)


def test_deform_conv_zero_offset_is_plain_conv():
    conv = DeformConv(3, 4, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 10, 10)
    out = conv(x, torch.zeros(2, 18, 10, 10))
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, padding=1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- rotated boxes
def test_rotated_iou_analytic_cases():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0, 0.0],
            [0.0, 0.0, 2.0, 2.0, 45.0],  # octagon overlap with the first
            [0.0, 0.0, 2.0, 4.0, 0.0],
            [0.0, 0.0, 4.0, 2.0, 90.0],  # same region as the previous one
            [10.0, 10.0, 1.0, 1.0, 30.0],  # disjoint
        ]
    )
    iou = pairwise_iou_rotated(boxes, boxes)
    octagon = 8 * (math.sqrt(2) - 1)
    assert iou[0, 1].item() == pytest.approx(octagon / (8 - octagon), abs=1e-5)
    assert iou[2, 3].item() == pytest.approx(1.0, abs=1e-5)
    assert iou[0, 2].item() == pytest.approx(4 / 8, abs=1e-5)
    assert iou[0, 4].item() == 0.0
    torch.testing.assert_close(iou.diagonal(), torch.ones(5))
    torch.testing.assert_close(iou, iou.T)


def test_rotated_iou_axis_aligned_matches_torchvision_and_is_rotation_invariant():
    torch.manual_seed(0)
    xy = torch.rand(30, 2) * 50
    wh = torch.rand(30, 2) * 30 + 1
    rot = torch.cat([xy, wh, torch.zeros(30, 1)], dim=1)
    xyxy = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    expected = torchvision.ops.box_iou(xyxy, xyxy)
    torch.testing.assert_close(ops.box_iou_rotated(rot, rot), expected, rtol=1e-5, atol=1e-5)
    # Rotating the whole scene about the origin by 37 degrees keeps every IoU.
    t = math.radians(37.0)
    cx = rot[:, 0] * math.cos(t) + rot[:, 1] * math.sin(t)
    cy = -rot[:, 0] * math.sin(t) + rot[:, 1] * math.cos(t)
    turned = torch.stack([cx, cy, rot[:, 2], rot[:, 3], torch.full((30,), 37.0)], dim=1)
    torch.testing.assert_close(ops.box_iou_rotated(turned, turned), expected, rtol=1e-4, atol=1e-4)
    assert RotatedBoxes(rot).area().shape == (30,)


def test_nms_rotated_matches_torchvision_on_upright_boxes():
    torch.manual_seed(0)
    xy = torch.rand(60, 2) * 40
    wh = torch.rand(60, 2) * 20 + 2
    scores = torch.rand(60)
    rot = torch.cat([xy, wh, torch.zeros(60, 1)], dim=1)
    xyxy = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    keep = nms_rotated(rot, scores, 0.3)
    assert keep.tolist() == torchvision.ops.nms(xyxy, scores, 0.3).tolist()


def test_roi_align_rotated_upright_matches_torchvision_roi_align():
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 20, 24, requires_grad=True)
    xyxy = torch.tensor([[0, 2.0, 3.0, 15.0, 11.0], [1, 5.5, 1.0, 20.0, 18.5]])
    ctr = (xyxy[:, 1:3] + xyxy[:, 3:5]) / 2
    wh = xyxy[:, 3:5] - xyxy[:, 1:3]
    rois = torch.cat([xyxy[:, :1], ctr, wh, torch.zeros(2, 1)], dim=1)
    for sampling_ratio in (2, 0):
        out = ROIAlignRotated((5, 4), spatial_scale=1.0, sampling_ratio=sampling_ratio)(feat, rois)
        ref = torchvision.ops.roi_align(feat, xyxy, (5, 4), 1.0, sampling_ratio, aligned=True)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0


def test_roi_align_rotated_half_turn_flips_the_patch():
    feat = torch.arange(16.0 * 16).view(1, 1, 16, 16)
    rois = torch.tensor([[0, 8.0, 8.0, 8.0, 8.0, 0.0], [0, 8.0, 8.0, 8.0, 8.0, 180.0]])
    out = ops.roi_align_rotated(feat, rois, (4, 4), 1.0, 2)
    torch.testing.assert_close(out[1, 0], out[0, 0].flip(0, 1), rtol=1e-4, atol=1e-4)
