"""SSL methods (one module per method) and the factory that builds one from its typed config."""

from __future__ import annotations

from pretrain.backbones import Backbone
from pretrain.config import BarlowConfig, BYOLConfig, MethodConfig, MocoConfig, SimCLRConfig, SimSiamConfig
from pretrain.methods.barlow import BarlowTwins
from pretrain.methods.base import SSLMethod, StepOutput, ViewBatch
from pretrain.methods.byol import BYOL
from pretrain.methods.moco import MoCoV2
from pretrain.methods.simclr import SimCLR
from pretrain.methods.simsiam import SimSiam

__all__ = ["SSLMethod", "StepOutput", "ViewBatch", "build_method"]


def build_method(cfg: MethodConfig, backbone: Backbone) -> SSLMethod:
    """The method module for ``cfg`` (dispatch on the config's ``kind``)."""
    if isinstance(cfg, MocoConfig):
        return MoCoV2(backbone, cfg)
    if isinstance(cfg, SimCLRConfig):
        return SimCLR(backbone, cfg)
    if isinstance(cfg, BYOLConfig):
        return BYOL(backbone, cfg)
    if isinstance(cfg, SimSiamConfig):
        return SimSiam(backbone, cfg)
    if isinstance(cfg, BarlowConfig):
        return BarlowTwins(backbone, cfg)
    raise TypeError(f"no method for config {type(cfg).__name__}")
