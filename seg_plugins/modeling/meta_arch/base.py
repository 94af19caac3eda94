"""The encoder-decoder meta-architecture all seg_plugins semantic models share.

Shape shorthand: N images, C image channels, K classes, H x W pixels.

It is detectron2's :class:`SemanticSegmentor` (normalisation with PIXEL_MEAN / PIXEL_STD,
padding of the batch to ``backbone.size_divisibility`` — targets with the head's
``ignore_value`` —, and ``sem_seg_postprocess``, which crops each image's logits back to its
own (H, W) and resizes them to its "height" x "width") plus an optional auxiliary head that
is used in training only (the FCN head on res4 of PSPNet / DeepLab / mmsegmentation, whose
loss is reported as ``loss_aux``).
"""

from typing import Optional, Sequence

from detectron2.config import configurable
from detectron2.modeling import Backbone, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

__all__ = ["EncoderDecoderSegmentor", "check_pixel_stats"]


class EncoderDecoderSegmentor(SemanticSegmentor):
    """backbone -> sem_seg_head (+ aux_head in training) on detectron2's semantic contract.

    ``forward(batched_inputs)`` takes a list of N dicts with "image" of shape (C, H_n, W_n)
    (unnormalised), optional "sem_seg" of shape (H_n, W_n) (int64; required in training) and
    optional "height", "width". Training returns ``{"loss_sem_seg": …, "loss_aux": …}``;
    eval returns N dicts ``{"sem_seg": logits of shape (K, height_n, width_n)}``.
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
    ):
        """
        Args:
            backbone: a detectron2 Backbone.
            sem_seg_head: a head on detectron2's semantic head contract (``ignore_value``,
                ``forward(features, targets) -> (None, losses) | (logits, {})``).
            pixel_mean, pixel_std: C values each, to normalise the C-channel input image.
            aux_head: optional head on the same contract, run in training only; its
                ``loss_sem_seg`` (already scaled by its own loss weight) becomes ``loss_aux``.
        """
        check_pixel_stats(pixel_mean, pixel_std, "pixel_mean", "pixel_std")
        super().__init__(
            backbone=backbone,
            sem_seg_head=sem_seg_head,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        self.aux_head = aux_head

    # from_config: SemanticSegmentor's (MODEL.BACKBONE.NAME + MODEL.SEM_SEG_HEAD.NAME, no aux
    # head) unless a subclass builds its own parts.

    def forward(self, batched_inputs):
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
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

        processed = []
        for result, input_per_image, image_size in zip(results, batched_inputs, images.image_sizes):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed.append({"sem_seg": sem_seg_postprocess(result, image_size, height, width)})
        return processed


def check_pixel_stats(mean: Sequence[float], std: Sequence[float], mean_key, std_key) -> None:
    """Raise unless mean and std give one value per channel (and std has no zero)."""
    if len(mean) == 0 or len(mean) != len(std):
        raise ValueError(
            f"{mean_key} has {len(mean)} values and {std_key} has {len(std)}; give one value "
            f"per image channel in both (e.g. [0.5] and [0.25] for grayscale)"
        )
    if any(s == 0 for s in std):
        raise ValueError(f"{std_key}={list(std)} contains 0; every channel needs a std > 0")

