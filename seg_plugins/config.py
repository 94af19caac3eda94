"""Config keys added by seg_plugins. One comment per key.

``add_seg_plugins_config(cfg)`` is idempotent and may run before or after other projects'
``add_*_config`` functions and before ``cfg.merge_from_file``.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_seg_plugins_config"]


def _setdefault(node: CN, key: str, value) -> None:
    """Add ``key`` unless the node has it already (keeps the call idempotent and lets a
    user or another project set a value before this runs)."""
    if key not in node:
        node[key] = value


def add_seg_plugins_config(cfg: CN) -> CN:
    """Add every key seg_plugins reads to ``cfg`` (in place; also returned)."""
    was_frozen = cfg.is_frozen()
    cfg.defrost()

    # --- the task: "semantic", "instance" or "panoptic"; "" = derived from the class of
    # MODEL.META_ARCHITECTURE (seg_plugins.modeling.task): mapper, evaluators, checks ------
    _setdefault(cfg.MODEL, "TASK", "")

    # --- U-Net (Ronneberger et al., 2015) -------------------------------------------------
    _setdefault(cfg.MODEL, "UNET", CN())
    unet = cfg.MODEL.UNET
    _setdefault(unet, "BASE_CHANNELS", 64)  # channels of the first encoder stage
    _setdefault(unet, "DEPTH", 4)  # number of 2x downsamplings; size_divisibility = 2**DEPTH
    _setdefault(unet, "CHANNEL_MULTIPLIER", 2)  # channel growth per stage (64,128,256,...)
    _setdefault(unet, "MAX_CHANNELS", 1024)  # cap on channels of any stage
    _setdefault(unet, "NORM", "BN")  # "", "BN", "SyncBN", "GN", ... (detectron2.layers.get_norm)
    _setdefault(unet, "UPSAMPLE", "bilinear")  # "bilinear" (+conv) or "transposed" (2x2 deconv)

    # --- dilated ResNet (DeepLab / FCN-ResNet backbones; also reads MODEL.RESNETS.*) ---------
    _setdefault(cfg.MODEL, "DILATED_RESNET", CN())
    dres = cfg.MODEL.DILATED_RESNET
    _setdefault(dres, "OUTPUT_STRIDE", 8)  # 8, 16 or 32: res4/res5 trade stride for dilation
    _setdefault(dres, "MULTI_GRID", [1, 1, 1])  # res5 per-block rate multipliers ([1, 2, 4])
    _setdefault(dres, "OUT_FEATURES", ["res2", "res3", "res4", "res5"])  # features returned

    # --- VGG-16 backbone and FCN-32s/16s/8s skip head (Long et al. 2015) -------------------
    _setdefault(cfg.MODEL, "VGG", CN())
    vgg = cfg.MODEL.VGG
    _setdefault(vgg, "BASE_CHANNELS", 64)  # conv1 width; stages are 1, 2, 4, 8, 8 times it
    _setdefault(vgg, "FC_CHANNELS", 4096)  # width of fc6 and fc7 (4096 in VGG-16)
    _setdefault(vgg, "FC6_KERNEL", 7)  # odd fc6 kernel, padded by k // 2 (7 in VGG-16)
    _setdefault(vgg, "DROPOUT", 0.5)  # dropout after fc6 and after fc7
    _setdefault(vgg, "NORM", "")  # "" as in VGG-16; "BN" to train from scratch
    _setdefault(vgg, "OUT_FEATURES", ["pool3", "pool4", "fc7"])  # conv1-5, pool1-5, fc6, fc7
    # FCNSkipHead: fixed factors on pool4 / pool3 before their score layers; [0.01, 0.0001] is
    # the at-once FCN-8s (for unnormalised VGG features), [1.0, 1.0] suits a BN backbone.
    _setdefault(vgg, "SKIP_SCALES", [0.01, 0.0001])

    # --- FCN head (torchvision's FCNHead; also the auxiliary head) --------------------------
    _setdefault(cfg.MODEL, "FCN", CN())
    _setdefault(cfg.MODEL.FCN, "IN_FEATURE", "res5")  # backbone feature the head reads
    _setdefault(cfg.MODEL.FCN, "CHANNELS", 0)  # 3x3 conv width; 0 = in_channels // 4
    _setdefault(cfg.MODEL.FCN, "DROPOUT", 0.1)  # dropout before the classifier
    _setdefault(cfg.MODEL.FCN, "NORM", "BN")  # norm after the 3x3 conv (also the aux head's)
    # "" = single-scale head on IN_FEATURE; "32s" / "16s" / "8s" = the paper's skip fusion
    # (Long et al. 2015) on a VGG-16 backbone's fc7 / pool4 / pool3.
    _setdefault(cfg.MODEL.FCN, "SKIPS", "")

    # --- ASPP / DeepLabV3 (Chen et al. 2017) and DeepLabV3+ (Chen et al. 2018) ---------------
    _setdefault(cfg.MODEL, "ASPP", CN())
    aspp = cfg.MODEL.ASPP
    _setdefault(aspp, "IN_FEATURE", "res5")  # backbone feature ASPP reads
    _setdefault(aspp, "DILATIONS", [12, 24, 36])  # atrous rates; [6, 12, 18] at output stride 16
    _setdefault(aspp, "CHANNELS", 256)  # width of every ASPP branch and of the projection
    _setdefault(aspp, "DROPOUT", 0.1)  # dropout after the projection
    _setdefault(aspp, "NORM", "BN")  # norm of ASPP convs; the image-pooling branch has none
    # norm of the image-pooling branch: "" = none (detectron2's ASPP; trains at any batch
    # size), "BN" / "SyncBN" as torchvision's DeepLabHead (needs >= 2 images per norm batch)
    _setdefault(aspp, "POOLING_NORM", "")
    _setdefault(cfg.MODEL, "DEEPLABV3PLUS", CN())
    dlp = cfg.MODEL.DEEPLABV3PLUS
    _setdefault(dlp, "LOW_LEVEL_FEATURE", "res2")  # stride-4 feature fused by the decoder
    _setdefault(dlp, "LOW_LEVEL_CHANNELS", 48)  # its 1x1 projection width
    _setdefault(dlp, "DECODER_CHANNELS", 256)  # width of the decoder's 3x3 convs

    # --- auxiliary head (training only; PSPNet / mmsegmentation recipe) ----------------------
    _setdefault(cfg.MODEL, "AUX_HEAD", CN())
    _setdefault(cfg.MODEL.AUX_HEAD, "ENABLED", False)  # add an FCN head on IN_FEATURE
    _setdefault(cfg.MODEL.AUX_HEAD, "IN_FEATURE", "res4")  # the feature it reads
    _setdefault(cfg.MODEL.AUX_HEAD, "CHANNELS", 256)  # its 3x3 conv width
    _setdefault(cfg.MODEL.AUX_HEAD, "LOSS_WEIGHT", 0.4)  # weight of loss_aux
    # its learning rate as a multiple of SOLVER.BASE_LR (torchvision's reference recipe: 10)
    _setdefault(cfg.MODEL.AUX_HEAD, "LR_FACTOR", 1.0)

    # --- semantic segmentation head / loss ------------------------------------------------
    # detectron2 already has MODEL.SEM_SEG_HEAD.{NUM_CLASSES, IGNORE_VALUE, LOSS_WEIGHT, NORM}.
    # NUM_CLASSES 1 = binary mode: one sigmoid (foreground) channel, targets 0/1 (+ignore).
    head = cfg.MODEL.SEM_SEG_HEAD
    _setdefault(head, "LOSS_TYPE", "cross_entropy")  # "cross_entropy", "dice" or "dice_ce"
    _setdefault(head, "CLASS_WEIGHTS", [])  # K loss weights ([bg, fg] if binary); [] = uniform
    _setdefault(head, "DICE_SMOOTH", 1.0)  # s in Dice (2I + s) / (P + T + s)
    _setdefault(head, "DICE_INCLUDE_BACKGROUND", True)  # class 0 enters the mean Dice loss
    _setdefault(head, "DICE_CE_WEIGHTS", [1.0, 1.0])  # [w_ce, w_dice] of LOSS_TYPE "dice_ce"
    _setdefault(head, "TOP_K_PERCENT", 1.0)  # CE over this fraction of hardest pixels; 1 = all
    _setdefault(head, "BINARY_THRESHOLD", 0.5)  # binary mode: foreground iff sigmoid > this

    # --- dense CRF (DeepLab v1/v2 post-processing) ---------------------------------------
    # Inference-only fully connected CRF on each image's logits (docs/crf.md). Defaults are
    # DeepLab-v2's published VOC setting (ResNet-101; deeplab-public-ver2 run_densecrf.sh).
    _setdefault(cfg.MODEL, "CRF", CN())
    crf = cfg.MODEL.CRF
    _setdefault(crf, "ENABLED", False)  # refine eval-mode logits with the CRF (never training)
    _setdefault(crf, "ITERATIONS", 10)  # mean-field iterations (>= 1)
    _setdefault(crf, "BILATERAL_WEIGHT", 4.0)  # w of the appearance kernel; 0 = off
    _setdefault(crf, "BILATERAL_XY_STD", 67.0)  # its position std theta_alpha, in pixels
    _setdefault(crf, "BILATERAL_INTENSITY_STD", 3.0)  # its theta_beta, in input-image units
    _setdefault(crf, "GAUSSIAN_WEIGHT", 3.0)  # w of the smoothness kernel; 0 = off
    _setdefault(crf, "GAUSSIAN_XY_STD", 1.0)  # its position std theta_gamma, in pixels
    _setdefault(crf, "MAX_EXACT_PIXELS", 4096)  # up to H*W: exact O(N^2) sum; above: the filter
    # Bilateral filter above MAX_EXACT_PIXELS: "permutohedral" (lattice, linear in H*W) or
    # "window" (kernel truncated to WINDOW_RADIUS; docs/crf.md's shapes tables used it).
    _setdefault(crf, "BILATERAL_FILTER", "permutohedral")
    _setdefault(crf, "WINDOW_RADIUS", 10)  # window approximation: bilateral pairs within r px
    # "torch" (this package) or "pydensecrf2" (Krähenbühl's C++ code, optional: pip install
    # seg_plugins[crf]; normalised kernels, CPU; ignores the three keys above).
    _setdefault(crf, "BACKEND", "torch")

    # --- data -----------------------------------------------------------------------------
    _setdefault(cfg.INPUT, "SEM_SEG", CN())
    # Train-time augmentation of the semantic mapper: random scale of the whole image in
    # this ratio range (1.0, 1.0 = off), then INPUT.CROP, then INPUT.RANDOM_FLIP.
    _setdefault(cfg.INPUT.SEM_SEG, "RESIZE_RATIO_RANGE", [1.0, 1.0])
    # Reject a random crop whose largest class covers more than this fraction (DeepLab's
    # "category area" constraint); 1.0 = off.
    _setdefault(cfg.INPUT.SEM_SEG, "CROP_SINGLE_CATEGORY_MAX_AREA", 1.0)

    # Per-image intensity normalisation right after reading (16-bit / float medical images):
    # "none", "zscore" (per channel; use PIXEL_MEAN 0 / PIXEL_STD 1), "percentile" (clip to
    # PERCENTILES, rescale to 0..255) or "window" (clip to WINDOW, e.g. a CT window in HU).
    _setdefault(cfg.INPUT, "INTENSITY_NORM", CN())
    _setdefault(cfg.INPUT.INTENSITY_NORM, "MODE", "none")  # see above
    _setdefault(cfg.INPUT.INTENSITY_NORM, "PERCENTILES", [0.5, 99.5])  # [low, high] in %
    _setdefault(cfg.INPUT.INTENSITY_NORM, "WINDOW", [0.0, 255.0])  # [low, high] raw values

    # Photometric distortion of training images (mmsegmentation's PhotoMetricDistortion):
    # each step applied with probability 0.5, contrast before or after the HSV steps at
    # random; saturation / hue only for 3-channel RGB / BGR images.
    _setdefault(cfg.INPUT.SEM_SEG, "PHOTOMETRIC", CN())
    photo = cfg.INPUT.SEM_SEG.PHOTOMETRIC
    _setdefault(photo, "ENABLED", False)  # off by default (as detectron2's stock configs)
    _setdefault(photo, "BRIGHTNESS_DELTA", 32.0)  # add U(-d, d), in 0..255 units
    _setdefault(photo, "CONTRAST_RANGE", [0.5, 1.5])  # multiply by U(lo, hi)
    _setdefault(photo, "SATURATION_RANGE", [0.5, 1.5])  # multiply HSV saturation by U(lo, hi)
    _setdefault(photo, "HUE_DELTA", 18)  # add U(-d, d) to OpenCV hue (0..180 scale)
    # Pad training crops smaller than INPUT.CROP.SIZE up to it: image with 0, label with the
    # ignore value, so every batch has the crop size (mmsegmentation's Pad after RandomCrop).
    _setdefault(cfg.INPUT.SEM_SEG, "PAD_TO_CROP", True)

    # --- dataset specs and checks (seg_plugins.data.spec / .validation) --------------------
    # YAML / JSON dataset spec files registered when the config is loaded (datasets without
    # Python; see datasets/README.md). Relative paths are resolved from the working dir.
    _setdefault(cfg.DATASETS, "SPECS", [])
    # Check run on every dataset when its loader is built: "off"; "light" (files exist,
    # headers readable, image/label sizes agree, label modes, annotation geometry); "full"
    # (also decodes every image and label and checks label values; tools/check_dataset.py).
    _setdefault(cfg.DATASETS, "CHECK", "light")
    # False (default): the first bad sample stops the run with every problem found named.
    # True: bad samples are dropped (training: also those found while decoding), counted,
    # logged, and listed in OUTPUT_DIR/skipped_samples.json.
    _setdefault(cfg.DATASETS, "SKIP_BAD_SAMPLES", False)

    # --- kill-safe training (seg_plugins.data.resumable, seg_plugins.engine.loop) -----------
    # Batches are a function of (seed, iteration): --resume continues with exactly the
    # batches (and augmentations) the uninterrupted run would have seen. TrainingSampler only.
    _setdefault(cfg.DATALOADER, "RESUMABLE", True)
    # Non-finite loss: 0 stops training at once (naming the iteration, the loss terms and the
    # last checkpoint); N > 0 skips up to N such optimizer steps (logged, counted) first.
    _setdefault(cfg.SOLVER, "SKIP_NONFINITE_STEPS", 0)

    # --- loading checkpoints (seg_plugins.engine.checkpoint.SafeCheckpointer) ---------------
    # False: .pth files load with torch.load(weights_only=True) and .pkl files with an
    # unpickler limited to arrays and dicts, so a file cannot run code. True: full pickle,
    # for files you made or trust (logged as a warning).
    _setdefault(cfg.MODEL, "WEIGHTS_TRUSTED", False)
    # Checkpoint tensors whose shape differs from the model's: "outputs" re-initialises
    # layers with another number of outputs (fine-tuning to new classes) and refuses any
    # other mismatch; "error" refuses all; "skip" skips all with a log line (detectron2).
    _setdefault(cfg.MODEL, "WEIGHTS_SHAPE_MISMATCH", "outputs")

    # --- solver ---------------------------------------------------------------------------
    _setdefault(cfg.SOLVER, "OPTIMIZER", "SGD")  # "SGD" (detectron2's) or "AdamW"
    _setdefault(cfg.SOLVER, "BETAS", [0.9, 0.999])  # AdamW betas
    # LR_SCHEDULER_NAME may also be "WarmupPolyLR": lr * (1 - iter / MAX_ITER) ** this power.
    _setdefault(cfg.SOLVER, "POLY_LR_POWER", 0.9)

    # --- speed options (seg_plugins.engine.acceleration; docs/speed.md) ---------------------
    # SOLVER.AMP.ENABLED (detectron2's key) trains in mixed precision on CPU too. Precision:
    # "auto" (float16 on CUDA, with a gradient scaler; bfloat16 on CPU), "float16", "bfloat16".
    _setdefault(cfg.SOLVER.AMP, "PRECISION", "auto")
    _setdefault(cfg.TEST, "AMP", CN())
    _setdefault(cfg.TEST.AMP, "ENABLED", False)  # evaluate under autocast (SOLVER.AMP.PRECISION)
    _setdefault(cfg.MODEL, "CHANNELS_LAST", False)  # NHWC convolution weights and activations
    _setdefault(cfg.MODEL, "COMPILE", CN())
    _setdefault(cfg.MODEL.COMPILE, "ENABLED", False)  # torch.compile backbone and heads
    _setdefault(cfg.MODEL.COMPILE, "BACKEND", "inductor")  # torch.compile backend
    _setdefault(cfg.MODEL.COMPILE, "MODE", "")  # "" (default), "reduce-overhead", "max-autotune"
    # CPU training (glibc): keep freed memory for reuse instead of page-faulting large
    # activations in again every step (seg_plugins/utils/memory.py; docs/speed.md).
    _setdefault(cfg.SOLVER, "CPU_KEEP_FREED_MEMORY", True)

    # --- semantic inference modes (seg_plugins.modeling.inference) --------------------------
    _setdefault(cfg.TEST, "SEM_SEG", CN())
    sem = cfg.TEST.SEM_SEG
    _setdefault(sem, "MODE", "whole")  # "whole": one pass per image; "slide": sliding windows
    _setdefault(sem, "CROP_SIZE", [512, 512])  # slide: window [h, w]; multiples of size_div.
    _setdefault(sem, "STRIDE", [341, 341])  # slide: window step [h, w]; <= CROP_SIZE
    _setdefault(sem, "WEIGHTING", "uniform")  # slide: average overlaps "uniform" / "gaussian"
    _setdefault(sem, "GAUSSIAN_SIGMA_SCALE", 0.125)  # gaussian: sigma = this x window side
    _setdefault(sem, "WINDOW_BATCH_SIZE", 1)  # slide: windows per forward pass (memory x this)
    _setdefault(sem, "FLIP", False)  # TTA: add the horizontally flipped image (probs averaged)
    _setdefault(sem, "SCALES", [1.0])  # TTA: image resize ratios, e.g. [0.75, 1, 1.25]; [1] = off

    # --- evaluation overlays (seg_plugins.evaluation.visualizer.SemSegVisualizer) -------------
    _setdefault(cfg.TEST, "SEM_SEG_VIS", CN())
    _setdefault(cfg.TEST.SEM_SEG_VIS, "ENABLED", True)  # write inference/<dataset>/overlays/
    _setdefault(cfg.TEST.SEM_SEG_VIS, "NUM_IMAGES", 4)  # overlay the first N images; 0 = none

    # --- semantic metrics (seg_plugins.evaluation.SemSegMetricsEvaluator; docs/metrics.md) ----
    _setdefault(cfg.TEST, "SEM_SEG_EVAL", CN())
    sse = cfg.TEST.SEM_SEG_EVAL
    # Classes absent from the ground truth but predicted: "mmseg" (IoU/Dice 0, counted in the
    # means), "detectron2_v0.6" (NaN per class, same means), "detectron2_main" (left out).
    _setdefault(sse, "ABSENT_CLASSES", "mmseg")
    _setdefault(sse, "BACKGROUND_CLASS", 0)  # class left out of fgDice / per-case Dice; -1 = none
    _setdefault(sse, "PER_CASE_DICE", False)  # per-image Dice (nnU-Net); 2-class sets always

    if was_frozen:
        cfg.freeze()
    return cfg
