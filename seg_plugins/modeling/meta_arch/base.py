"""The encoder-decoder meta-architecture all seg_plugins semantic models share.

Shape shorthand: N images, C image channels, K classes, H x W pixels.

It is detectron2's :class:`SemanticSegmentor` (normalisation with PIXEL_MEAN / PIXEL_STD,
padding of the batch to ``backbone.size_divisibility`` — targets with the head's
``ignore_value`` —, and ``sem_seg_postprocess``, which crops each image's logits back to its
own (H, W) and resizes them to its "height" x "width"), except that whole-image inference on
images of one size runs unpadded, with the logits resized to the image's own size
(``exact_size``; torchvision's behaviour, so converted torchvision weights give its outputs
at any size), plus an optional auxiliary head that
is used in training only (the FCN head on res4 of PSPNet / DeepLab / mmsegmentation, whose
loss is reported as ``loss_aux``) and an optional inference-only post-processing module
``crf`` (:class:`seg_plugins.modeling.postprocessing.DenseCRF`, DeepLab's dense CRF), applied
to each image's logits on its own (H, W) before the resize.

At inference, ``inference`` (:class:`seg_plugins.modeling.inference.SemSegInference`, the
TEST.SEM_SEG config node) may replace the batched whole-image pass by sliding windows and / or
test-time augmentation, one image at a time; their logits of shape (K, H, W) then take the
same steps (crf, resize).
"""

from typing import Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import Backbone, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import Tensor, nn

from ...structures import binary_logits_to_two_class, is_binary
from ..inference import SemSegInference
from ..losses import check_target_values

__all__ = ["EncoderDecoderSegmentor", "check_pixel_stats"]


def _postprocess(result: Tensor, image_size, height: int, width: int) -> Tensor:
    """detectron2's ``sem_seg_postprocess`` (crop the padding, resize to height x width),
    without its bilinear resize when the size already matches: a same-size bilinear resize
    with align_corners=False is the identity, but still costs a full pass over K x H x W."""
    if (int(height), int(width)) == tuple(int(v) for v in image_size):
        return result[:, : image_size[0], : image_size[1]]
    return sem_seg_postprocess(result, image_size, height, width)


class EncoderDecoderSegmentor(SemanticSegmentor):
    """backbone -> sem_seg_head (+ aux_head in training) on detectron2's semantic contract.

    ``forward(batched_inputs)`` takes a list of N dicts with "image" of shape (C, H_n, W_n)
    (unnormalised), optional "sem_seg" of shape (H_n, W_n) (int64; required in training) and
    optional "height", "width". Training returns ``{"loss_sem_seg": …, "loss_aux": …}``;
    eval returns N dicts ``{"sem_seg": logits of shape (K, height_n, width_n)}`` (with ``crf``:
    the log of the CRF marginals; binary mode: the logit of the foreground marginal).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        aux_head: Optional[nn.Module] = None,
        crf: Optional[nn.Module] = None,
        inference: Optional[SemSegInference] = None,
    ):
        """
        Args:
            backbone: a detectron2 Backbone.
            sem_seg_head: a head on detectron2's semantic head contract (``ignore_value``,
                ``forward(features, targets) -> (None, losses) | (logits, {})``).
            pixel_mean, pixel_std: C values each, to normalise the C-channel input image.
            aux_head: optional head on the same contract, run in training only; its
                ``loss_sem_seg`` (already scaled by its own loss weight) becomes ``loss_aux``.
            crf: optional inference-only ``crf(logits (K, H, W), image (C, H, W)) -> marginals
                (K, H, W)`` (a DenseCRF), run on each image's logits before the resize.
            inference: how eval predicts each image (whole / slide, flip / scales TTA); None
                or a plain one (whole image, one view) = the batched forward above.
        """
        check_pixel_stats(pixel_mean, pixel_std, "pixel_mean", "pixel_std")
        super().__init__(
            backbone=backbone,
            sem_seg_head=sem_seg_head,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        self.aux_head = aux_head
        self.crf = crf
        if inference is not None:
            inference.check_size_divisibility(backbone.size_divisibility)
        self.inference = inference

    # from_config: SemanticSegmentor's (MODEL.BACKBONE.NAME + MODEL.SEM_SEG_HEAD.NAME, no aux
    # head) unless a subclass builds its own parts.

    @property
    def exact_size(self) -> bool:
        """Whether eval runs on unpadded images with logits resized to each image's own size
        (:meth:`SemSegHeadBase.logits_at`): every head of ours but FCNSkipHead (FCN-8s on
        VGG crops its upsampled scores, so its input must be padded)."""
        return callable(getattr(self.sem_seg_head, "logits_at", None))

    def forward(self, batched_inputs):
        if "sem_seg" in batched_inputs[0]:
            self._check_targets_before_transfer([x["sem_seg"] for x in batched_inputs])
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        plain = self.inference is None or self.inference.is_plain
        same_size = len({tuple(x.shape[-2:]) for x in images}) == 1
        if not self.training and plain and same_size and self.exact_size:
            # Whole-image inference at the image's exact size, as torchvision's models run:
            # zeros padded to size_divisibility would enter the border convolutions and
            # ASPP's image pooling and change the logits (by 30-40% of their range for
            # DeepLabV3 at 97 x 131). Images of different sizes are padded to batch them.
            batch = torch.stack(images)
            results = self.sem_seg_head.logits_at(self.backbone(batch), batch.shape[-2:])
            image_sizes = [tuple(batch.shape[-2:])] * len(images)
        elif self.training or plain:
            images = ImageList.from_tensors(images, self.backbone.size_divisibility)
            features = self.backbone(images.tensor)

            targets = None
            if "sem_seg" in batched_inputs[0]:
                targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
                targets = ImageList.from_tensors(
                    targets, self.backbone.size_divisibility, self.sem_seg_head.ignore_value
                ).tensor
            results, losses = self.sem_seg_head(features, targets)
            if self.training:
                if self.aux_head is not None:
                    _, aux_losses = self.aux_head(features, targets)
                    losses = {**losses, "loss_aux": aux_losses["loss_sem_seg"]}
                return losses
            image_sizes = images.image_sizes
        else:  # TEST.SEM_SEG slide / TTA: logits of shape (K, H_n, W_n), one image at a time
            div = 1 if self.exact_size else self.backbone.size_divisibility
            results = [self.inference(self._window_logits, x, div) for x in images]
            image_sizes = [tuple(x.shape[-2:]) for x in images]

        processed = []
        for result, input_per_image, image_size in zip(results, batched_inputs, image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            if self.crf is not None:
                result = self._crf_logits(result, image_size, input_per_image["image"])
            processed.append({"sem_seg": _postprocess(result, image_size, height, width)})
        return processed

    def _check_targets_before_transfer(self, targets: list) -> None:
        """On an accelerator, check the label values while they are still on the CPU: the
        loss checks CPU targets with a ValueError but device targets only with an
        asynchronous assert (no host sync per step), whose message is terse."""
        num_logits = getattr(self.sem_seg_head, "num_classes", None)
        if self.device.type == "cpu" or num_logits is None:
            return
        for target in targets:
            if target.device.type == "cpu":
                check_target_values(target, num_logits, self.sem_seg_head.ignore_value)

    def _window_logits(self, batch: Tensor) -> Tensor:
        """Eval logits of shape (B, K, h, w) of a normalised batch of shape (B, C, h, w)."""
        if self.exact_size:
            return self.sem_seg_head.logits_at(self.backbone(batch), batch.shape[-2:])
        return self.sem_seg_head(self.backbone(batch))[0]

    def _crf_logits(self, logits: Tensor, image_size, image: Tensor) -> Tensor:
        """``self.crf`` on logits of shape (K, H', W') cropped to ``image_size`` (H, W) with
        the unnormalised image of shape (C, H, W); returns the log of the marginals, of shape
        (K, H, W), so that softmax / argmax read them as logits. Binary mode (K = 1, sigmoid):
        the CRF runs on the two classes softmax([0, x]) = [1 - p, p] and the result is the
        foreground marginal's logit, of shape (1, H, W), so the evaluator's
        MODEL.SEM_SEG_HEAD.BINARY_THRESHOLD applies to the marginal."""
        height, width = image_size
        logits = logits[:, :height, :width]
        image = image[:, :height, :width].to(logits.device)
        if is_binary(logits.shape[0]):
            q = self.crf(binary_logits_to_two_class(logits), image)
            return _safe_log(q[1:]) - _safe_log(q[:1])
        return _safe_log(self.crf(logits, image))


def _safe_log(p: Tensor) -> Tensor:
    """log p, finite where p underflowed to 0 (bilinear resizing of -inf gives NaN)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def check_pixel_stats(mean: Sequence[float], std: Sequence[float], mean_key, std_key) -> None:
    """Raise unless mean and std give one value per channel (and std has no zero)."""
    if len(mean) == 0 or len(mean) != len(std):
        raise ValueError(
            f"{mean_key} has {len(mean)} values and {std_key} has {len(std)}; give one value "
            f"per image channel in both (e.g. [0.5] and [0.25] for grayscale)"
        )
    if any(s == 0 for s in std):
        raise ValueError(f"{std_key}={list(std)} contains 0; every channel needs a std > 0")
