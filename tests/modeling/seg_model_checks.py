"""Shared by the model tests: tiny models, batched inputs and the train-step checks."""

import os

import torch


def make_inputs(sizes, num_classes, channels=3, seed=0, with_targets=True):
    """One uint8 image per (h, w) in ``sizes``, with random targets (top fifth ignored)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for h, w in sizes:
        item = {"image": torch.randint(0, 256, (channels, h, w), generator=gen).to(torch.uint8)}
        if with_targets:
            target = torch.randint(0, num_classes, (h, w), generator=gen)
            target[: h // 5] = 255  # some ignored pixels
            item["sem_seg"] = target
        inputs.append(item)
    return inputs


def train_step_checks(model, inputs, loss_keys=("loss_sem_seg",)):
    """One training forward/backward: the expected losses, finite, a finite gradient for
    every parameter."""
    model.train()
    losses = model(inputs)
    assert set(losses) == set(loss_keys)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


# Every seg_plugins semantic meta-architecture: its shapes config and overrides that narrow it
# so that a test is quick (architecture unchanged).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_RESNET_SMALL = ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
TINY_MODELS = {
    "UNet": ("unet_shapes.yaml", ["MODEL.UNET.BASE_CHANNELS", 4, "MODEL.UNET.DEPTH", 3]),
    "FCN": ("fcn_R18_shapes.yaml", [*_RESNET_SMALL, "MODEL.FCN.CHANNELS", 8]),
    "FCN-8s-VGG16": ("fcn8s_vgg16_shapes.yaml", []),
    "DeepLabV3": ("deeplabv3_R18_shapes.yaml", [*_RESNET_SMALL, "MODEL.ASPP.CHANNELS", 8]),
    "DeepLabV3Plus": (
        "deeplabv3plus_R18_shapes.yaml",
        [*_RESNET_SMALL, "MODEL.ASPP.CHANNELS", 8, "MODEL.DEEPLABV3PLUS.DECODER_CHANNELS", 8],
    ),
}


def tiny_model_cfg(case, *opts):
    """The config of ``TINY_MODELS[case]`` (+ ``opts``, KEY VALUE ...) on the CPU."""
    import seg_plugins  # first: repairs detectron2 where needed

    # isort: split
    from detectron2.config import get_cfg

    config, narrow = TINY_MODELS[case]
    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", config))
    cfg.merge_from_list([*narrow, *opts, "MODEL.DEVICE", "cpu"])
    return cfg
