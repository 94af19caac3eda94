"""seg_plugins: FCN, U-Net, DeepLabV3 and DeepLabV3+ for detectron2.

Importing this package (1) repairs the detectron2 install where needed (see
:mod:`seg_plugins.compat`; it must be imported before ``detectron2.modeling``), and
(2) registers the models, datasets and evaluators into detectron2's registries. Then::

    import seg_plugins
    from detectron2.config import get_cfg

    cfg = get_cfg()
    seg_plugins.add_seg_plugins_config(cfg)
    cfg.merge_from_file("configs/shapes/unet_shapes.yaml")
"""

from . import compat

# detectron2 and fvcore call torch.jit.script when imported, which torch 2.x answers with a
# FutureWarning per call: hidden for these imports only (compat.quiet_jit_script_deprecation).
with compat.quiet_jit_script_deprecation():
    compat.apply()  # before anything below imports detectron2.modeling / data / evaluation

    # Registering imports: datasets; backbones, heads and meta-architectures; evaluators.
    from . import data, evaluation, modeling  # noqa: E402,F401
    from .config import add_seg_plugins_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Predictor", "add_seg_plugins_config", "compat", "__version__"]


def __getattr__(name: str):
    # Predictor lives with the engine (detectron2.engine, the Trainer): imported on first
    # use, so that "import seg_plugins" stays as light as registering the models.
    if name == "Predictor":
        from .engine.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'seg_plugins' has no attribute {name!r}")
