"""Fully connected CRF post-processing as in DeepLab v1/v2 (Chen et al., "Semantic Image
Segmentation with Deep Convolutional Nets and Fully Connected CRFs", ICLR 2015,
https://arxiv.org/abs/1412.7062; "DeepLab: ...", TPAMI 2017, https://arxiv.org/abs/1606.00915)
on the dense CRF of Krähenbühl & Koltun ("Efficient Inference in Fully Connected CRFs with
Gaussian Edge Potentials", NeurIPS 2011, https://arxiv.org/abs/1210.5644).

Shape shorthand: K classes, C image channels, H x W pixels, N = H * W.

Energy of a labelling x: ``E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(i, j)`` with the
unary ``psi_u(l) = -logits_i(l)``, the Potts compatibility ``mu(l, l') = [l != l']`` and

    k(i, j) = w_b * exp(-|p_i - p_j|^2 / (2 theta_a^2) - |I_i - I_j|^2 / (2 theta_b^2))
            + w_g * exp(-|p_i - p_j|^2 / (2 theta_g^2))

(p: pixel position, I: the C-channel image value). Mean-field inference approximates the
marginals Q (K, H, W) in pure PyTorch (CPU or GPU, no compiled op):

- images of at most ``max_exact_pixels`` pixels: the bilateral term is summed EXACTLY over all
  N^2 pairs, in strips of ``block_size`` rows of the N x N kernel (memory O(block_size * N),
  never N x N; time O(N^2) per iteration: about 0.45 s at 128 x 128 on 2 CPU cores);
- larger images, ``bilateral_filter="permutohedral"`` (the default): the bilateral sum is
  filtered with the permutohedral lattice (Adams, Baek & Davis, Eurographics 2010; see
  permutohedral.py), as Krähenbühl's own code does, built once per image (about 2 s at
  1024 x 1024 on one CPU thread). Time per iteration O(N (C + 3) K) for splat and slice and
  O(M (C + 3) K) for the blur over the lattice's M <= N (C + 3) vertices: linear in N. An
  APPROXIMATION of the kernel sum (the lattice's own resampling and its missing vertices;
  measured against the exact sum in docs/crf.md); the message is the lattice's filter minus
  its weight of the pixel onto itself, floored at 0;
- larger images, ``bilateral_filter="window"``: the bilateral kernel is truncated to a
  (2r+1) x (2r+1) window around each pixel (r = ``window_radius``), as in ConvCRF (Teichmann &
  Cipolla, "Convolutional CRFs for Semantic Segmentation", BMVC 2019,
  https://arxiv.org/abs/1805.04777). Also an APPROXIMATION: pixels farther than r apart never
  interact. Time O(r^2 N) per iteration; memory O(N (C + K)), plus the window weights
  (O(r^2 N)) when they fit a fixed budget.

``backend="pydensecrf2"`` hands the whole inference to Krähenbühl's C++ code through the
optional pydensecrf2 package (``pip install seg_plugins[crf]``), with the same parameters: its
kernels are NORMALISED (each divided symmetrically by the lattice's filter of ones, the pixel
itself included; the code's default), a different CRF for the same weights (docs/crf.md
compares the labels).

The Gaussian (smoothness) term is a separable filter truncated at 6 theta_g (exact up to
the dropped weights, below exp(-18) ~ 1.5e-8 of the centre; exact when the image is smaller
than the truncation). Krähenbühl's released code and DeepLab's scripts filter with the
permutohedral lattice and normalise the kernels, so the same parameters need not have exactly
the same effect here.
"""

import math
from typing import Iterable, Iterator, Optional

import torch
from detectron2.config import configurable
from torch import Tensor, nn
from torch.nn import functional as F

from . import pydensecrf_backend
from .permutohedral import PermutohedralLattice, csr_matrix

__all__ = ["DenseCRF", "build_crf"]

# Entries of one block of the N x N kernel in the exact mode (16 MiB in float32), and of the
# cached window weights in the window mode (64 MiB in float32).
BLOCK_ELEMENTS = 1 << 22
WINDOW_CACHE_ELEMENTS = 1 << 24
GAUSSIAN_TRUNCATE = 6.0  # separable Gaussian taps reach 6 standard deviations
# Keep float32 out of subnormal numbers, slow on x86 CPUs (2-3x for the whole exact mode on
# shapes images: the kernel of two dissimilar colours lands there all the time): in
# the messages, kernel values below e^-46 ~ 1e-20 are raised to it and Q below 1e-15 is raised
# to 1e-15, so every product stays above 1e-35 > 1.2e-38, the smallest normal float32. A
# message changes by less than N * 1e-15.
LOG_KERNEL_FLOOR = -46.0
Q_FLOOR = 1e-15

# argument: (MODEL.CRF key, minimum, whether the minimum itself is excluded, integer)
_ARGS = {
    "iterations": ("ITERATIONS", 1, False, True),
    "bilateral_weight": ("BILATERAL_WEIGHT", 0, False, False),
    "bilateral_xy_std": ("BILATERAL_XY_STD", 0, True, False),
    "bilateral_intensity_std": ("BILATERAL_INTENSITY_STD", 0, True, False),
    "gaussian_weight": ("GAUSSIAN_WEIGHT", 0, False, False),
    "gaussian_xy_std": ("GAUSSIAN_XY_STD", 0, True, False),
    "max_exact_pixels": ("MAX_EXACT_PIXELS", 0, False, True),
    "window_radius": ("WINDOW_RADIUS", 1, False, True),
}
# argument: (MODEL.CRF key, the values it takes)
_CHOICES = {
    "bilateral_filter": ("BILATERAL_FILTER", ("permutohedral", "window")),
    "backend": ("BACKEND", ("torch", "pydensecrf2")),
}


def _check(name: str, value):
    """``value`` as int / float, or a ValueError naming the argument and its MODEL.CRF key."""
    key, minimum, strict, integer = _ARGS[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok or (integer and int(value) != value):
        relation = ">" if strict else ">="
        kind = "an integer" if integer else "a number"
        hint = "; set MODEL.CRF.ENABLED False to skip the CRF" if name == "iterations" else ""
        raise ValueError(
            f"{name}={value!r} (MODEL.CRF.{key}): expected {kind} {relation} {minimum}{hint}"
        )
    return int(value) if integer else float(value)


def _check_choice(name: str, value) -> str:
    key, choices = _CHOICES[name]
    if value not in choices:
        raise ValueError(f"{name}={value!r} (MODEL.CRF.{key}): expected one of {choices}")
    return value


class DenseCRF(nn.Module):
    """Mean-field inference of the fully connected CRF (see the module docstring).

    ``forward(logits, image)`` takes the unary logits of shape (K, H, W) (any per-pixel offset
    cancels: log-probabilities give the same result; pass ``probs.log()`` for probabilities)
    and the unnormalised image of shape (C, H, W) (any C: grayscale, RGB, multi-spectral; the
    intensity std is in its units, 0-255 for 8-bit images) and returns the marginals Q of
    shape (K, H, W) (sum 1 over K). Inference only: it runs without autograd and has no
    parameters or buffers (adds nothing to a checkpoint).

    Example::

        crf = DenseCRF(iterations=5)
        image = torch.randint(0, 256, (3, 45, 61)).float()
        q = crf(torch.randn(4, 45, 61), image)
        assert q.shape == (4, 45, 61) and torch.allclose(q.sum(0), torch.ones(45, 61))
    """

    @configurable
    def __init__(
        self,
        *,
        iterations: int = 10,
        bilateral_weight: float = 4.0,
        bilateral_xy_std: float = 67.0,
        bilateral_intensity_std: float = 3.0,
        gaussian_weight: float = 3.0,
        gaussian_xy_std: float = 1.0,
        max_exact_pixels: int = 64 * 64,
        bilateral_filter: str = "permutohedral",
        window_radius: int = 10,
        backend: str = "torch",
        block_size: Optional[int] = None,
    ):
        """
        Args:
            iterations: mean-field iterations (>= 1).
            bilateral_weight, bilateral_xy_std, bilateral_intensity_std: w_b, theta_a
                (pixels) and theta_b (image units) of the appearance kernel; w_b = 0 turns it
                off.
            gaussian_weight, gaussian_xy_std: w_g and theta_g (pixels) of the smoothness
                kernel; w_g = 0 turns it off.
            max_exact_pixels: images with at most this many pixels use the exact O(N^2)
                bilateral sum, larger ones ``bilateral_filter`` (0 = always the filter).
            bilateral_filter: the approximation above ``max_exact_pixels``: "permutohedral"
                (the lattice, linear in N) or "window" (the truncated kernel).
            window_radius: r of the (2r+1) x (2r+1) bilateral window of "window".
            backend: "torch" (this module) or "pydensecrf2" (Krähenbühl's C++ code through the
                optional package of that name, CPU, normalised kernels; ignores
                max_exact_pixels, bilateral_filter, window_radius and block_size).
            block_size: rows of the N x N kernel per block in the exact mode; None = as many
                as fit ``BLOCK_ELEMENTS`` entries.

        The defaults are DeepLab-v2's published VOC setting for its ResNet-101 model
        (deeplab-public-ver2, densecrf/run_densecrf.sh: MAX_ITER=10, Bi_W=4, Bi_XY_STD=67,
        Bi_RGB_STD=3, POS_W=3, POS_XY_STD=1; its VGG-16 model used 4, 65, 3, 2, 2).
        """
        super().__init__()
        self.iterations = _check("iterations", iterations)
        self.bilateral_weight = _check("bilateral_weight", bilateral_weight)
        self.bilateral_xy_std = _check("bilateral_xy_std", bilateral_xy_std)
        self.bilateral_intensity_std = _check("bilateral_intensity_std", bilateral_intensity_std)
        self.gaussian_weight = _check("gaussian_weight", gaussian_weight)
        self.gaussian_xy_std = _check("gaussian_xy_std", gaussian_xy_std)
        self.max_exact_pixels = _check("max_exact_pixels", max_exact_pixels)
        self.bilateral_filter = _check_choice("bilateral_filter", bilateral_filter)
        self.window_radius = _check("window_radius", window_radius)
        self.backend = _check_choice("backend", backend)
        if self.backend == "pydensecrf2":
            pydensecrf_backend.import_densecrf()  # fail at construction, with the hint
        if block_size is not None and (isinstance(block_size, bool) or int(block_size) < 1):
            raise ValueError(f"block_size={block_size!r}: expected None or an integer >= 1")
        self.block_size = None if block_size is None else int(block_size)

    @classmethod
    def from_config(cls, cfg):
        names = {**_ARGS, **_CHOICES}
        return {name: cfg.MODEL.CRF[key] for name, (key, *_) in names.items()}

    def extra_repr(self) -> str:
        names = list(_ARGS) + list(_CHOICES) + ["block_size"]
        return ", ".join(f"{name}={getattr(self, name)}" for name in names)

    @torch.no_grad()
    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        """
        Args:
            logits: unary scores of shape (K, H, W).
            image: the unnormalised image of shape (C, H, W), any dtype and device.

        Returns:
            the mean-field marginals Q of shape (K, H, W), in float32 (float64 if logits are).
        """
        if logits.dim() != 3 or image.dim() != 3 or logits.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"DenseCRF expects logits of shape (K, H, W) and an image of shape (C, H, W) of "
                f"the same H x W, got {tuple(logits.shape)} and {tuple(image.shape)}"
            )
        if self.backend == "pydensecrf2":
            return pydensecrf_backend.mean_field(
                logits,
                image,
                iterations=self.iterations,
                bilateral=(
                    self.bilateral_weight,
                    self.bilateral_xy_std,
                    self.bilateral_intensity_std,
                ),
                gaussian=(self.gaussian_weight, self.gaussian_xy_std),
            )
        dtype = torch.promote_types(logits.dtype, torch.float32)
        num_classes, height, width = logits.shape
        # Q as (N, K), classes innermost: the lattice's and the Gaussian's sparse products
        # take it as it is, and the softmax over classes is over contiguous rows.
        unary = logits.to(dtype).reshape(num_classes, -1).T.contiguous()
        image = image.to(device=unary.device, dtype=dtype)
        bilateral = self._bilateral_message_fn(image) if self.bilateral_weight > 0 else None
        if self.gaussian_weight > 0:
            gaussian = _gaussian_message_fn(height, width, self.gaussian_xy_std, unary)
        q = F.softmax(unary, dim=1)
        for _ in range(self.iterations):
            # Mean field for the Potts energy above: Q_i(l) ∝ exp(-psi_u(l) - sum_{j != i}
            # k(i, j) sum_l' [l != l'] Q_j(l')) = exp(logits_i(l) - sum_{j != i} k(i, j)
            # (1 - Q_j(l))). The sum of k(i, j) does not depend on l and cancels in the
            # softmax, so the message ADDS sum_{j != i} k(i, j) Q_j(l): a label is favoured
            # where similar pixels (by position and colour) already hold it.
            q_msg, total = q.clamp_min(Q_FLOOR), unary.clone()
            if bilateral is not None:
                total.add_(bilateral(q_msg), alpha=self.bilateral_weight)
            if self.gaussian_weight > 0:
                total.add_(gaussian(q_msg), alpha=self.gaussian_weight)
            q = F.softmax(total, dim=1)
        return q.T.reshape(num_classes, height, width).contiguous()

    def _bilateral_message_fn(self, image: Tensor):
        """q (N, K) -> sum_{j != i} of the unweighted bilateral kernel times q_j, (N, K)."""
        height, width = image.shape[-2:]
        stds = (self.bilateral_xy_std, self.bilateral_intensity_std)
        if height * width <= self.max_exact_pixels:
            features = _bilateral_features(image, *stds)
            block = self.block_size or max(1, BLOCK_ELEMENTS // (height * width))
            return lambda q: _exact_message(q, features, block)
        if self.bilateral_filter == "permutohedral":
            return _lattice_message_fn(_bilateral_features(image, *stds))
        offsets = _half_window(self.window_radius, height, width)
        if len(offsets) * height * width <= WINDOW_CACHE_ELEMENTS:
            weights = list(_window_weights(image, offsets, *stds))  # reused every iteration
        else:
            weights = None  # recomputed every iteration, to bound the memory

        def window(q: Tensor) -> Tensor:
            q_image = q.T.view(-1, height, width)  # (K, H, W), a view
            out = _window_message(q_image, weights or _window_weights(image, offsets, *stds))
            return out.reshape(len(q_image), -1).T

        return window


def build_crf(cfg) -> Optional[DenseCRF]:
    """``DenseCRF(cfg)`` if MODEL.CRF.ENABLED, else None (what the meta-architectures take)."""
    return DenseCRF(cfg) if cfg.MODEL.CRF.ENABLED else None


def _gaussian_message_fn(height: int, width: int, std: float, like: Tensor):
    """q (N, K) -> sum_{j != i} exp(-|p_i - p_j|^2 / (2 std^2)) q_j, (N, K): a separable
    filter with zero padding (pixels outside the image do not exist), minus the centre; each
    direction one sparse product with a banded matrix built here (along y: (H, H) on q seen as
    (H, W K); along x: (N, N), H blocks of (W, W), 13 N entries for std 1). On one CPU
    thread at 1024 x 1024 with 21 classes 0.17 s against 0.35 s for a depthwise convolution
    of (K, H, W) (and 1.3 s for K images of one channel), with no transposes."""
    along_y = _banded(height, 1, std, like)
    along_x = _banded(width, height, std, like)
    num_classes = like.shape[1]

    def message(q: Tensor) -> Tensor:
        out = along_y @ q.view(height, width * num_classes)
        return (along_x @ out.view(height * width, num_classes)).sub_(q)

    return message


def _banded(size: int, blocks: int, std: float, like: Tensor) -> Tensor:
    """The block-diagonal CSR matrix of ``blocks`` copies of the (size, size) Gaussian
    filter, exp(-(a - b)^2 / (2 std^2)) for |a - b| <= min(6 std, size - 1)."""
    radius = min(math.ceil(GAUSSIAN_TRUNCATE * std), size - 1)
    offsets = torch.arange(-radius, radius + 1, device=like.device)
    columns = torch.arange(size, device=like.device)[:, None] + offsets  # (size, 2r + 1)
    inside = (columns >= 0) & (columns < size)
    taps = torch.exp(-0.5 * (offsets.to(like.dtype) / std) ** 2).expand_as(columns)
    columns, values = columns[inside], taps[inside]  # one block's entries, row-major
    starts = torch.arange(blocks, device=like.device)[:, None]
    pointers = torch.cat([inside.new_zeros(1, dtype=torch.long), inside.sum(1).cumsum(0)])
    pointers = (starts * len(columns) + pointers[:-1]).reshape(-1)
    pointers = torch.cat([pointers, pointers.new_full((1,), blocks * len(columns))])
    columns = (starts * size + columns).reshape(-1)
    return csr_matrix(pointers, columns, values.repeat(blocks), (blocks * size, blocks * size))


def _bilateral_features(image: Tensor, xy_std: float, intensity_std: float) -> Tensor:
    """Features of shape (N, 2 + C), [y / theta_a, x / theta_a, I / theta_b]: the bilateral
    kernel is exp(-|f_i - f_j|^2 / 2)."""
    channels, height, width = image.shape
    ys = torch.arange(height, device=image.device, dtype=image.dtype) / xy_std
    xs = torch.arange(width, device=image.device, dtype=image.dtype) / xy_std
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))
    return torch.cat([grid, image / intensity_std]).reshape(2 + channels, -1).T.contiguous()


def _lattice_message_fn(features: Tensor):
    """q (N, K) -> the permutohedral lattice's bilateral message (the lattice built here, once
    per image): its filter of q minus its weight of each pixel onto itself (for a dense
    lattice: an upper bound of the true one), floored at 0 as the exact message is."""
    lattice = PermutohedralLattice(features)
    self_weight = lattice.self_weight[:, None]
    return lambda q: lattice(q).sub_(self_weight * q).clamp_(min=0)


def _exact_message(q: Tensor, features: Tensor, block: int) -> Tensor:
    """The exact bilateral message over all N^2 pairs for q (N, K). The kernel is symmetric,
    so each strip of ``block`` rows holds only the pairs (i, j >= start) and serves both
    directions: half the exponentials of the full N x N product, memory O(block * N)."""
    out = torch.zeros_like(q)
    for start in range(0, q.shape[0], block):
        stop = min(start + block, q.shape[0])
        # Differences, not |a|^2 + |b|^2 - 2ab: the expansion cancels catastrophically for
        # 0-255 intensities over small theta_b (errors ~1e-3 in float32).
        dist = torch.cdist(
            features[start:stop], features[start:], compute_mode="donot_use_mm_for_euclid_dist"
        )
        kernel = dist.square_().mul_(-0.5).clamp_(min=LOG_KERNEL_FLOOR).exp_()
        out[start:stop] += kernel @ q[start:]  # pairs (i, j >= start), N - start
        out[stop:] += kernel[:, stop - start :].T @ q[start:stop]  # their mirror (j, i)
    return out.sub_(q)  # k(i, i) = 1: drop self


def _half_window(radius: int, height: int, width: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) of one half of the (2r+1)^2 window (without (0, 0)); the other half
    is their negation, as the kernel is symmetric. Offsets beyond the image are dropped."""
    ry, rx = min(radius, height - 1), min(radius, width - 1)
    return [(dy, dx) for dy in range(ry + 1) for dx in range(-rx, rx + 1) if dy > 0 or dx > 0]


def _pair_slices(dy: int, dx: int, height: int, width: int):
    """Index slices of the pixels p and p + (dy, dx) for every p where both are inside."""
    x0, x1 = max(0, -dx), width - max(0, dx)
    return (slice(0, height - dy), slice(x0, x1)), (slice(dy, height), slice(x0 + dx, x1 + dx))


def _window_weights(
    image: Tensor, offsets: Iterable[tuple[int, int]], xy_std: float, intensity_std: float
) -> Iterator[tuple[int, int, Tensor]]:
    """(dy, dx, k(p, p + d) of shape (H - dy, W - |dx|)) for each offset d."""
    height, width = image.shape[-2:]
    for dy, dx in offsets:
        here, there = _pair_slices(dy, dx, height, width)
        diff = (image[:, here[0], here[1]] - image[:, there[0], there[1]]).square_().sum(0)
        spatial = (dy * dy + dx * dx) / (2.0 * xy_std**2)
        log_kernel = diff.mul_(-0.5 / intensity_std**2).sub_(spatial)
        yield dy, dx, log_kernel.clamp_(min=LOG_KERNEL_FLOOR).exp_()


def _window_message(q: Tensor, weights: Iterable[tuple[int, int, Tensor]]) -> Tensor:
    """The windowed bilateral message: each weight serves the pair in both directions."""
    height, width = q.shape[-2:]
    out = torch.zeros_like(q)
    for dy, dx, weight in weights:
        here, there = _pair_slices(dy, dx, height, width)
        out[:, here[0], here[1]].addcmul_(q[:, there[0], there[1]], weight)
        out[:, there[0], there[1]].addcmul_(q[:, here[0], here[1]], weight)
    return out
