#!/usr/bin/env python
"""Train and evaluate any seg_plugins or detectron2 model from a yacs config.

    python tools/train_net.py --config-file configs/shapes/unet_shapes.yaml
    python tools/train_net.py --config-file X.yaml --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file X.yaml --resume        # continue OUTPUT_DIR
    python tools/train_net.py --config-file X.yaml --num-gpus 8    # detectron2's launcher

All flags are detectron2's (see `--help`); KEY VALUE pairs at the end override the config.
"""

import warnings

# detectron2 v0.6 scripts a few helpers with torch.jit.script, deprecated in torch 2.x; the
# warning says nothing actionable to a user of this command, so the entry point hides it.
warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)

import seg_plugins  # noqa: F401  first: repairs detectron2 where needed, registers models
from seg_plugins.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
