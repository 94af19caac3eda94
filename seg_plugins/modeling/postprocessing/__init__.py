"""Inference-time post-processing of semantic logits (the dense CRF of DeepLab v1/v2)."""

from .crf import DenseCRF, build_crf

__all__ = ["DenseCRF", "build_crf"]
