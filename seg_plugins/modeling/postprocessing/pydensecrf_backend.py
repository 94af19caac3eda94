"""The dense CRF run by Krähenbühl's C++ code through the optional pydensecrf2 package
(``pip install seg_plugins[crf]``; it installs the module ``pydensecrf.densecrf``, built from
source where no wheel exists): ``DenseCRF(backend="pydensecrf2")``, MODEL.CRF.BACKEND.

Shape shorthand: K classes, C image channels, H x W pixels, N = H * W.

Same parameters, different CRF: the code filters both kernels with the permutohedral lattice
and NORMALISES them (its default, NORMALIZE_SYMMETRIC: K -> D^-1/2 K D^-1/2 with D the
lattice's filter of ones, the pixel itself included, nothing subtracted), where
seg_plugins' torch path sums the kernel over the other pixels (Krähenbühl & Koltun's
energy). docs/crf.md measures how often the labels agree.
"""

import importlib
from typing import Tuple

import numpy
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MODULE", "import_densecrf", "mean_field"]

MODULE = "pydensecrf.densecrf"  # what the pydensecrf2 distribution installs


def import_densecrf():
    """The pydensecrf.densecrf module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(MODULE)
    except ImportError as e:
        raise ImportError(
            "MODEL.CRF.BACKEND 'pydensecrf2' (backend='pydensecrf2') needs the optional "
            "pydensecrf2 package: pip install seg_plugins[crf] (or pip install pydensecrf2; "
            "without a wheel for this platform it builds from source and needs a C++ "
            "compiler), or set MODEL.CRF.BACKEND to 'torch'"
        ) from e


def mean_field(
    logits: Tensor,
    image: Tensor,
    *,
    iterations: int,
    bilateral: Tuple[float, float, float],
    gaussian: Tuple[float, float],
) -> Tensor:
    """Q of shape (K, H, W) after ``iterations`` mean-field steps of pydensecrf2's DenseCRF2D,
    on the logits' device, in their float dtype (float32 at least; it computes in float32).

    Args:
        logits: unary scores of shape (K, H, W); its unary energy is -log_softmax.
        image: the unnormalised image of shape (C, H, W), any C, range and dtype.
        bilateral: (w_b, theta_a, theta_b): its Potts weight ``compat``, the position std
            in pixels, the intensity std in image units; w_b = 0 leaves the kernel out.
        gaussian: (w_g, theta_g), the same for the smoothness kernel (addPairwiseGaussian).

    The bilateral features, (x, y) / theta_a and the C channels / theta_b, go in as floats
    (addPairwiseEnergy): for an 8-bit RGB image exactly what addPairwiseBilateral computes
    from it (tested), and any number of channels, any range and dtype work, where
    addPairwiseBilateral takes only a C-contiguous uint8 H x W x 3 array.
    """
    densecrf = import_densecrf()
    num_classes, height, width = logits.shape
    model = densecrf.DenseCRF2D(width, height, num_classes)
    energy = -F.log_softmax(logits.detach().cpu().double(), dim=0)
    model.setUnaryEnergy(energy.float().reshape(num_classes, -1).contiguous().numpy())
    if gaussian[0] > 0:
        model.addPairwiseGaussian(sxy=gaussian[1], compat=gaussian[0])
    if bilateral[0] > 0:
        model.addPairwiseEnergy(_features(image, *bilateral[1:]), compat=bilateral[0])
    q = torch.tensor(numpy.asarray(model.inference(iterations)))  # a copy: Eigen owns it
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return q.reshape(num_classes, height, width).to(device=logits.device, dtype=dtype)


def _features(image: Tensor, xy_std: float, intensity_std: float):
    """The float32 array (2 + C, N) of DenseCRF2D.addPairwiseBilateral's features: x, y (x
    first, as it puts them), then the channels."""
    channels, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    position = torch.stack([xs, ys]).to(torch.float32) / xy_std
    colour = image.detach().cpu().to(torch.float32) / intensity_std
    return torch.cat([position, colour]).reshape(2 + channels, -1).contiguous().numpy()
