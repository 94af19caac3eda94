"""One parametrized test over every registered semantic model: odd sizes, 1-channel input,
a gradient for every parameter, no NaN, a deterministic loss under a fixed seed."""

import seg_plugins  # noqa: F401

# isort: split
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from seg_plugins.modeling.heads import FCNSkipHead, SemSegHeadBase
from seg_plugins.modeling.meta_arch import EncoderDecoderSegmentor
from tests.modeling.seg_model_checks import TINY_MODELS, tiny_model_cfg


def _cfg(case, *opts):
    return tiny_model_cfg(case, *opts)


def _batch(channels, num_classes, sizes=((45, 45), (200, 249))):
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in sizes:
        image = torch.randint(0, 256, (channels, h, w), generator=g).float()
        target = torch.randint(0, num_classes, (h, w), generator=g)
        target[: h // 5] = 255  # some ignored pixels
        batch.append({"image": image, "sem_seg": target})
    return batch


def test_every_semantic_meta_arch_is_covered():
    ours = {
        name
        for name, cls in META_ARCH_REGISTRY
        if cls.__module__.startswith("seg_plugins.") and issubclass(cls, EncoderDecoderSegmentor)
    }
    assert {"UNet", "FCN", "DeepLabV3", "DeepLabV3Plus"} <= ours
    covered = {case.split("-")[0] for case in TINY_MODELS}
    assert ours <= covered, f"add a case for {ours - covered}"


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_odd_sizes_gradients_and_determinism(case):
    cfg = _cfg(case)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        loss_dict = model(_batch(3, k))
        total = sum(loss_dict.values())
        assert torch.isfinite(total)
        losses.append(total.item())
    assert losses[0] == losses[1]  # same seed, same init, same loss
    total.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{case}: {name} received no gradient"
            assert torch.isfinite(p.grad).all(), f"{case}: {name} has a non-finite gradient"

    model.eval()
    with torch.no_grad():
        outputs = model([{"image": b["image"]} for b in _batch(3, k)])
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(k, 45, 45), (k, 200, 249)]
    assert all(torch.isfinite(o["sem_seg"]).all() for o in outputs)


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_every_head_shares_the_base_and_all_but_fcn_skip_run_at_exact_size(case):
    """Every head is a SemSegHeadBase (one loss code); whole-image eval runs unpadded at the
    image's own size (``logits_at``) for all but FCNSkipHead, whose transposed convs place
    their output on the padded input's grid."""
    model = build_model(_cfg(case))
    head = model.sem_seg_head
    assert isinstance(head, SemSegHeadBase)
    skip = isinstance(head, FCNSkipHead)
    assert model.exact_size is not skip
    assert callable(getattr(head, "logits_at", None)) is not skip


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_one_channel_input(case):
    cfg = _cfg(case, "MODEL.PIXEL_MEAN", [127.5], "MODEL.PIXEL_STD", [64.0])
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    model = build_model(cfg).train()
    loss = sum(model(_batch(1, k, sizes=((45, 45), (37, 61)))).values())
    loss.backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(1, 45, 45) * 255}])[0]["sem_seg"]
    assert out.shape == (k, 45, 45)


@pytest.mark.parametrize("case", sorted(TINY_MODELS))
def test_loss_options_reach_the_head(case):
    """MODEL.SEM_SEG_HEAD.* loss keys take effect in every model: Dice+CE weighted [0, 1]
    is the Dice loss, and a binary (1-channel) model trains with it."""

    def loss(*opts):
        cfg = _cfg(case, *opts)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        return model(_batch(3, 2))["loss_sem_seg"]

    dice = loss("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "dice", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4)
    mixed = loss(
        "MODEL.SEM_SEG_HEAD.LOSS_TYPE",
        "dice_ce",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        4,
        "MODEL.SEM_SEG_HEAD.DICE_CE_WEIGHTS",
        [0.0, 1.0],
    )
    torch.testing.assert_close(mixed, dice)
    binary = loss("MODEL.SEM_SEG_HEAD.LOSS_TYPE", "dice_ce", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 1)
    assert torch.isfinite(binary)
    binary.backward()


@pytest.mark.parametrize("out_size", [(13, 17), (20, 25), (40, 50)])
def test_postprocess_equals_detectron2s(out_size):
    """The same-size shortcut of our postprocess gives detectron2's sem_seg_postprocess
    values exactly (a same-size bilinear resize is the identity), other sizes unchanged."""
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    from seg_plugins.modeling.meta_arch.base import _postprocess

    padded = torch.randn(4, 24, 32)  # an image of 20 x 25 padded to 24 x 32
    ours = _postprocess(padded, (20, 25), *out_size)
    theirs = sem_seg_postprocess(padded, (20, 25), *out_size)
    assert ours.shape == theirs.shape == (4, *out_size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
