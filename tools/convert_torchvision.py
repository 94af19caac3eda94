#!/usr/bin/env python
"""Convert torchvision weights to seg_plugins models (a .pth for MODEL.WEIGHTS).

    # torchvision's segmentation weights -> our FCN / DeepLabV3 (+ the matching config)
    python tools/convert_torchvision.py deeplabv3_resnet50_coco-cd0a2569.pth \\
        deeplabv3_R50.pth --config-out deeplabv3_R50_torchvision.yaml
    # ImageNet ResNet -> our backbone, for fine-tuning (configs/Base-DeepLabV3.yaml etc.)
    python tools/convert_torchvision.py resnet50-11ad3fa6.pth R50_torchvision.pth
    # a randomly initialised torchvision model, by name (tests, dry runs)
    python tools/convert_torchvision.py fcn_resnet50 /tmp/fcn.pth --num-classes 5

Missing, unexpected and unused keys are listed by name; then nothing is written (exit 1)
unless --allow-mismatch. See seg_plugins/modeling/convert_torchvision.py.
"""

import sys

import seg_plugins  # noqa: F401  first: repairs detectron2 where needed, registers models
from seg_plugins.modeling.convert_torchvision import main

if __name__ == "__main__":
    sys.exit(main())
