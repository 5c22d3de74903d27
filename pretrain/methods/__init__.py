"""SSL methods (one module per method) and the factory that builds one from its typed config."""

from __future__ import annotations

from pretrain.backbones import Backbone
from pretrain.config import MethodConfig, MocoConfig
from pretrain.methods.base import SSLMethod, StepOutput, ViewBatch
from pretrain.methods.moco import MoCoV2

__all__ = ["SSLMethod", "StepOutput", "ViewBatch", "build_method"]


def build_method(cfg: MethodConfig, backbone: Backbone) -> SSLMethod:
    """The method module for ``cfg`` (dispatch on the config's ``kind``)."""
    if isinstance(cfg, MocoConfig):
        return MoCoV2(backbone, cfg)
    raise TypeError(f"no method for config {type(cfg).__name__}")
