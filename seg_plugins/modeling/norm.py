"""One check of a config's normalisation choice, shared by every backbone and head."""

from typing import Callable, Union

from detectron2.layers import get_norm

__all__ = ["GN_GROUPS", "check_norm"]

GN_GROUPS = 32  # detectron2.layers.get_norm("GN", C) builds nn.GroupNorm(32, C)


def check_norm(
    norm: Union[str, Callable, None], channels: int, key: str, channels_key: str = ""
) -> None:
    """Raise a ValueError naming config ``key`` if ``get_norm(norm, channels)`` cannot build
    the layer (unknown name) or would build a broken one (GroupNorm whose 32 groups do not
    divide ``channels``; ``channels_key`` names the config key that sets the width)."""
    if norm == "GN" and channels % GN_GROUPS != 0:
        fix = (
            f"make {channels_key} a multiple of {GN_GROUPS}"
            if channels_key
            else (f"use channel counts that are multiples of {GN_GROUPS}")
        )
        raise ValueError(
            f"{key}='GN' uses {GN_GROUPS} groups (detectron2.layers.get_norm), which do not "
            f"divide a layer of {channels} channels; {fix}, or set {key} to 'BN' or ''"
        )
    if isinstance(norm, str) and norm:  # a callable norm is the caller's own choice
        try:
            get_norm(norm, channels)
        except (KeyError, ValueError) as e:
            raise ValueError(
                f"{key}={norm!r} cannot normalise {channels} channels ({e}); use '', 'BN', "
                f"'SyncBN', 'FrozenBN' or 'GN' (detectron2.layers.get_norm)"
            ) from None
