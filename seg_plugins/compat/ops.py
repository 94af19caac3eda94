"""Replacements for the operators of detectron2's compiled ``_C`` extension.

Used only when detectron2 was installed without that extension (see compat/__init__.py).
Deformable convolution maps onto ``torchvision.ops.deform_conv2d`` (CPU and CUDA, with
autograd). torchvision has no rotated-box operators, so rotated IoU, rotated NMS and
ROIAlignRotated are written here in plain PyTorch: slower than the CUDA kernels, same
results, and differentiable where the originals are.

Shapes: N, M boxes; R RoIs; B batch; C channels; H, W height and width.
Rotated boxes are (x_center, y_center, width, height, angle_degrees), angle counter-clockwise
in image coordinates (y pointing down), as in ``detectron2.structures.RotatedBoxes``.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

_IntPair = Union[int, Tuple[int, int]]


# ----------------------------------------------------------------------------- deform conv
def deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    groups: int = 1,
    deformable_groups: int = 1,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Same signature and offset layout as ``detectron2.layers.deform_conv.deform_conv``.

    Args:
        input: of shape (B, C, H, W).
        offset: of shape (B, 2 * deformable_groups * kh * kw, H_out, W_out), (dy, dx) pairs.
        weight: of shape (C_out, C // groups, kh, kw).
    ``groups`` and ``deformable_groups`` are implied by the shapes in torchvision and are
    checked against them here; ``im2col_step`` is a CUDA-kernel tuning knob with no effect.
    """
    _check_groups(input, offset, weight, groups, deformable_groups)
    return deform_conv2d(
        input, offset, weight, stride=_pair(stride), padding=_pair(padding),
        dilation=_pair(dilation),
    )


def modulated_deform_conv(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor = None,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    groups: int = 1,
    deformable_groups: int = 1,
) -> torch.Tensor:
    """DCNv2; same signature as ``detectron2.layers.deform_conv.modulated_deform_conv``.

    Args:
        mask: of shape (B, deformable_groups * kh * kw, H_out, W_out), the modulation.
    """
    _check_groups(input, offset, weight, groups, deformable_groups)
    return deform_conv2d(
        input, offset, weight, bias=bias, stride=_pair(stride), padding=_pair(padding),
        dilation=_pair(dilation), mask=mask,
    )


def _check_groups(input, offset, weight, groups, deformable_groups):
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(
            f"deform_conv: input has {input.shape[1]} channels but weight {tuple(weight.shape)} "
            f"with groups={groups} expects {weight.shape[1] * groups}"
        )
    kernel_points = weight.shape[2] * weight.shape[3]
    if offset.shape[1] != 2 * deformable_groups * kernel_points:
        raise ValueError(
            f"deform_conv: offset has {offset.shape[1]} channels, expected "
            f"2 * deformable_groups({deformable_groups}) * kh * kw({kernel_points})"
        )


# ----------------------------------------------------------------------------- rotated IoU
def _rotated_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 5) rotated boxes -> (N, 4, 2) corners in counter-clockwise order on screen."""
    cx, cy, w, h, a = boxes.unbind(-1)
    theta = a * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # detectron2's convention: a positive angle rotates counter-clockwise on screen (y down),
    # so a local point (dx, dy) maps to (cx + dx cos + dy sin, cy - dx sin + dy cos).
    dx = torch.stack([-w, w, w, -w], dim=-1) / 2
    dy = torch.stack([-h, -h, h, h], dim=-1) / 2
    x = cx[:, None] + dx * cos[:, None] + dy * sin[:, None]
    y = cy[:, None] - dx * sin[:, None] + dy * cos[:, None]
    return torch.stack([x, y], dim=-1)


def _inside(points: torch.Tensor, poly: torch.Tensor, eps: float) -> torch.Tensor:
    """points (N, M, P, 2), convex poly (N, M, 4, 2) -> (N, M, P) inside-or-on-edge."""
    edge = poly.roll(-1, dims=-2) - poly  # (N, M, 4, 2)
    rel = points[..., :, None, :] - poly[..., None, :, :]  # (N, M, P, 4, 2)
    cross = edge[..., None, :, 0] * rel[..., 1] - edge[..., None, :, 1] * rel[..., 0]
    return (cross >= -eps).all(-1) | (cross <= eps).all(-1)


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of rotated boxes, as ``detectron2._C.box_iou_rotated``.

    The intersection of two convex quadrilaterals is the convex hull of the corners of
    each that lie in the other plus the crossings of their edges; its area comes from
    sorting those points by angle around their mean and the shoelace formula. All pairs
    are processed at once with fixed-size (24-point) candidate sets and validity masks.

    Args:
        boxes1: of shape (N, 5); boxes2: of shape (M, 5).
    Returns:
        of shape (N, M), in [0, 1].
    """
    n, m = boxes1.shape[0], boxes2.shape[0]
    if n == 0 or m == 0:
        return boxes1.new_zeros((n, m))
    dtype = boxes1.dtype
    b1, b2 = boxes1.double(), boxes2.double()
    area1 = (b1[:, 2] * b1[:, 3])[:, None]
    area2 = (b2[:, 2] * b2[:, 3])[None, :]
    p1 = _rotated_corners(b1)[:, None].expand(n, m, 4, 2)
    p2 = _rotated_corners(b2)[None, :].expand(n, m, 4, 2)
    scale = torch.maximum(b1[:, 2:4].abs().max(), b2[:, 2:4].abs().max()).clamp(min=1.0)
    eps = 1e-9 * float(scale) ** 2

    # Edge crossings: segment a0->a1 of box 1 against c0->c1 of box 2.
    a0, a1 = p1[:, :, :, None], p1.roll(-1, dims=2)[:, :, :, None]  # (N, M, 4, 1, 2)
    c0, c1 = p2[:, :, None], p2.roll(-1, dims=2)[:, :, None]  # (N, M, 1, 4, 2)
    d1, d2 = a1 - a0, c1 - c0
    denom = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]
    diff = c0 - a0
    safe = torch.where(denom.abs() > eps, denom, torch.ones_like(denom))
    t = (diff[..., 0] * d2[..., 1] - diff[..., 1] * d2[..., 0]) / safe
    u = (diff[..., 0] * d1[..., 1] - diff[..., 1] * d1[..., 0]) / safe
    cross_ok = (denom.abs() > eps) & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    crossings = (a0 + t[..., None] * d1).reshape(n, m, 16, 2)

    points = torch.cat([p1, p2, crossings], dim=2)  # (N, M, 24, 2)
    valid = torch.cat(
        [_inside(p1, p2, eps), _inside(p2, p1, eps), cross_ok.reshape(n, m, 16)], dim=2
    )
    count = valid.sum(-1, keepdim=True)
    center = (points * valid[..., None]).sum(2) / count.clamp(min=1)
    rel = points - center[:, :, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid ones last
    order = angle.argsort(dim=-1)
    rel = rel.gather(2, order[..., None].expand_as(rel))
    valid = valid.gather(2, order)
    # Invalid points sit at the end; replace them by the first valid point so that they add
    # zero-area triangles to the shoelace sum.
    rel = torch.where(valid[..., None], rel, rel[:, :, :1].expand_as(rel))
    nxt = rel.roll(-1, dims=2)
    inter = 0.5 * (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(-1).abs()
    inter = torch.where(count.squeeze(-1) >= 3, inter, torch.zeros_like(inter))
    union = area1 + area2 - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
    return iou.clamp(0.0, 1.0).to(dtype)


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on rotated boxes; indices kept, sorted by decreasing score.

    Args:
        boxes: of shape (N, 5); scores: of shape (N,).
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True)
    iou = box_iou_rotated(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    over = (iou > iou_threshold).cpu()
    keep = []
    for i in range(len(order)):  # sequential by nature; N is small after top-k
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


# ------------------------------------------------------------------------ ROIAlignRotated
def roi_align_rotated(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: _IntPair,
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """ROIAlign on rotated boxes with detectron2's semantics (always "aligned": a pixel
    centre is at +0.5; samples outside [-1, size] read 0; sampling grid per bin of
    ``sampling_ratio`` or, if <= 0, ceil(roi_size / output_size) points).

    Args:
        input: of shape (B, C, H, W).
        rois: of shape (R, 6): (batch_index, x_ctr, y_ctr, w, h, angle_degrees).
    Returns:
        of shape (R, C, output_h, output_w). Differentiable w.r.t. ``input`` by autograd.
    """
    ph, pw = _pair(output_size)
    out = input.new_zeros((rois.shape[0], input.shape[1], ph, pw))
    for r in range(rois.shape[0]):  # per-RoI grid sizes differ when sampling_ratio <= 0
        out[r] = _roi_align_rotated_one(input, rois[r], ph, pw, spatial_scale, sampling_ratio)
    return out


def _roi_align_rotated_one(input, roi, ph, pw, spatial_scale, sampling_ratio):
    _, _, height, width = input.shape
    b = int(roi[0].item())
    cx, cy = roi[1] * spatial_scale - 0.5, roi[2] * spatial_scale - 0.5
    # detectron2 forces malformed RoIs to be at least 1x1
    rw, rh = (roi[3] * spatial_scale).clamp(min=1.0), (roi[4] * spatial_scale).clamp(min=1.0)
    theta = roi[5] * (math.pi / 180.0)
    gh = sampling_ratio if sampling_ratio > 0 else max(int(math.ceil(float(rh) / ph)), 1)
    gw = sampling_ratio if sampling_ratio > 0 else max(int(math.ceil(float(rw) / pw)), 1)
    dev, dt = input.device, input.dtype
    yy = -rh / 2 + (torch.arange(ph * gh, device=dev, dtype=dt) + 0.5) * (rh / (ph * gh))
    xx = -rw / 2 + (torch.arange(pw * gw, device=dev, dtype=dt) + 0.5) * (rw / (pw * gw))
    yy, xx = torch.meshgrid(yy, xx, indexing="ij")
    cos, sin = torch.cos(theta), torch.sin(theta)
    y = yy * cos - xx * sin + cy
    x = yy * sin + xx * cos + cx
    vals = _bilinear_d2(input[b], y, x, height, width)  # (C, ph*gh, pw*gw)
    return F.avg_pool2d(vals[None], kernel_size=(gh, gw))[0]


def _bilinear_d2(feat: torch.Tensor, y: torch.Tensor, x: torch.Tensor, height: int, width: int):
    """Bilinear sampling of (C, H, W) at float coords with detectron2's border rules."""
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y0 = y.floor().long().clamp(max=height - 1)
    x0 = x.floor().long().clamp(max=width - 1)
    y1 = (y0 + 1).clamp(max=height - 1)
    x1 = (x0 + 1).clamp(max=width - 1)
    y = torch.where(y0 >= height - 1, y0.to(y.dtype), y)
    x = torch.where(x0 >= width - 1, x0.to(x.dtype), x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    v = (
        feat[:, y0, x0] * (hy * hx) + feat[:, y0, x1] * (hy * lx)
        + feat[:, y1, x0] * (ly * hx) + feat[:, y1, x1] * (ly * lx)
    )
    return torch.where(outside, torch.zeros_like(v), v)
