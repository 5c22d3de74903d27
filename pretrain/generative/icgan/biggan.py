"""The IC-GAN generator: BigGAN conditioned on an instance feature (Casanova et al., NeurIPS 2021).

Inference only.  Written here from the architecture of IC-GAN's BigGAN code (facebookresearch/ic_gan,
``BigGAN_PyTorch``, derived from ajbrock/BigGAN-PyTorch); module and buffer names are those of the released
generator checkpoints (``G_ema_best0.pth``), so ``load_state_dict(strict=True)`` of a released ``G_ema``
file works.  Checked against the reference implementation's own outputs (tests/pretrain/generative/fixtures).

Function computed (``C = ch``; resolution 256: six up-sampling blocks 4 -> 8 -> ... -> 256):

* ``y = shared_feat(h)``: spectrally normalised linear 2048 -> ``shared_dim_feat`` (512) of the
  L2-normalised SwAV feature ``h`` (the instance conditioning);
* hierarchical noise: ``z`` (``dim_z = num_slots * z_chunk`` = 7 x 17 = 119 values for the release, the
  reference rounding its configured 120 down) is split into ``num_slots`` chunks; chunk 0 feeds ``linear``
  (-> ``16C x 4 x 4``), chunk ``j >= 1`` is concatenated *after* ``y`` to condition block ``j - 1``:
  ``c_j = [y, z_j]`` (529 values);
* each ``GBlock``: ``h = conv2(relu(bn2(conv1(up(relu(bn1(x, c)))), c))) + conv_sc(up(x))`` with nearest
  x2 up-sampling and conditional BN ``bn(x, c) = BN_stored(x) * (1 + gain(c)) + bias(c)`` (``gain``,
  ``bias``: bias-free SN linears; ``BN_stored`` uses the stored running statistics, eps ``bn_eps``);
* SA-GAN self-attention after the block whose output is 64 x 64:
  ``x + gamma * o(g . softmax(theta^T phi)^T)``, ``phi`` and ``g`` max-pooled 2 x 2, widths C/8, C/8, C/2;
* output: BN (stored stats, learnt ``gain``/``bias``) -> ReLU -> SN 3x3 conv to RGB -> ``tanh``, [-1, 1].

Spectral norm as BigGAN stores it: each SN layer keeps ``u0`` (``[1, out]``) and ``sv0`` (``[1]``, only
logged).  At inference (the reference's ``G.eval()``): one power-iteration step from the stored ``u0``,
which is not updated: ``v = normalize(u0 W)``, ``u = normalize(v W^T)``, ``sigma = v W^T u^T``, and the
layer uses ``W / sigma`` (``W``: the weight as ``[out, fan_in]``; ``normalize`` with eps ``sn_eps``).
These modules never update ``u0``, ``sv0`` or the BN statistics: they are for sampling only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Input/output channel multipliers of the generator blocks per output resolution (BigGAN's G_arch).
CHANNEL_MULTIPLIERS: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}


@dataclass(frozen=True)
class BigGANConfig:
    """Architecture of an IC-GAN BigGAN generator (defaults: the released ``icgan_biggan_imagenet_res256``).

    Attributes:
        resolution: output side (64, 128 or 256).
        ch: channel width multiplier (``G_ch``: 96; the half-capacity release 64).
        z_chunk: noise values per hierarchical slot (the reference's ``dim_z // num_slots``: 120 // 7 = 17).
        shared_dim: width of the class embedding ``shared`` (unused without class conditioning, but stored).
        n_classes: rows of ``shared``.
        feat_dim: instance-feature width (SwAV ResNet-50: 2048).
        shared_dim_feat: width of the projected instance feature ``y``.
        attention: output resolutions of the blocks followed by self-attention.
        bottom_width: spatial side of ``linear``'s output.
        bn_eps: BatchNorm epsilon (``BN_eps``).
        sn_eps: epsilon of the power iteration's normalisation (``SN_eps``; IC-GAN's default 1e-6).
    """

    resolution: int = 256
    ch: int = 96
    z_chunk: int = 17
    shared_dim: int = 128
    n_classes: int = 1000
    feat_dim: int = 2048
    shared_dim_feat: int = 512
    attention: tuple[int, ...] = field(default=(64,))
    bottom_width: int = 4
    bn_eps: float = 1e-5
    sn_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.resolution not in CHANNEL_MULTIPLIERS:
            raise ValueError(
                f"resolution must be one of {sorted(CHANNEL_MULTIPLIERS)}, got {self.resolution}"
            )
        if min(self.ch, self.z_chunk, self.shared_dim_feat, self.feat_dim) < 1:
            raise ValueError("ch, z_chunk, shared_dim_feat and feat_dim must be >= 1")

    @property
    def in_channels(self) -> list[int]:
        return [self.ch * m for m in CHANNEL_MULTIPLIERS[self.resolution][0]]

    @property
    def out_channels(self) -> list[int]:
        return [self.ch * m for m in CHANNEL_MULTIPLIERS[self.resolution][1]]

    @property
    def block_resolutions(self) -> list[int]:
        """Output side of each block (8, 16, ..., resolution)."""
        return [self.bottom_width * 2 ** (i + 1) for i in range(len(self.in_channels))]

    @property
    def num_slots(self) -> int:
        return len(self.in_channels) + 1

    @property
    def dim_z(self) -> int:
        """Noise values the generator consumes (``num_slots * z_chunk``)."""
        return self.num_slots * self.z_chunk

    @property
    def cond_dim(self) -> int:
        """Input width of the conditional-BN linears: ``[y, z_j]``."""
        return self.shared_dim_feat + self.z_chunk


def spectral_normalised(weight: Tensor, u: Tensor, eps: float) -> Tensor:
    """``weight / sigma``, ``sigma`` from one power-iteration step started at ``u`` (``[1, out]``), which is
    not updated (BigGAN's ``SN.W_`` in eval mode, one singular value)."""
    w = weight.reshape(weight.shape[0], -1).float()
    with torch.autocast(device_type=weight.device.type, enabled=False):  # sigma in float32 under autocast
        with torch.no_grad():
            v = F.normalize(torch.matmul(u, w), eps=eps)
            u_new = F.normalize(torch.matmul(v, w.t()), eps=eps)
        sigma = torch.squeeze(torch.matmul(torch.matmul(v, w.t()), u_new.t()))
    return weight / sigma


class SNConv2d(nn.Conv2d):
    """Conv2d with BigGAN's spectral norm (buffers ``u0`` ``[1, out]`` and ``sv0`` ``[1]``)."""

    u0: Tensor

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int, bias: bool = True,
                 eps: float = 1e-6) -> None:  # fmt: skip
        super().__init__(cin, cout, kernel_size, padding=padding, bias=bias)
        self.eps = eps
        self.register_buffer("u0", torch.randn(1, cout))
        self.register_buffer("sv0", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        w = spectral_normalised(self.weight, self.u0, self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class SNLinear(nn.Linear):
    """Linear with BigGAN's spectral norm (buffers ``u0`` ``[1, out]`` and ``sv0`` ``[1]``)."""

    u0: Tensor

    def __init__(self, cin: int, cout: int, bias: bool = True, eps: float = 1e-6) -> None:
        super().__init__(cin, cout, bias=bias)
        self.eps = eps
        self.register_buffer("u0", torch.randn(1, cout))
        self.register_buffer("sv0", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, spectral_normalised(self.weight, self.u0, self.eps), self.bias)


class ConditionalBN(nn.Module):
    """BigGAN's ``ccbn``: stored-statistics BN, then ``* (1 + gain(c)) + bias(c)``; ``x`` ``[B, C, H, W]``,
    ``c`` ``[B, cond_dim]``."""

    stored_mean: Tensor
    stored_var: Tensor

    def __init__(self, channels: int, cond_dim: int, eps: float, sn_eps: float) -> None:
        super().__init__()
        self.gain = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.bias = SNLinear(cond_dim, channels, bias=False, eps=sn_eps)
        self.eps = eps
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        gain = (1 + self.gain(c)).view(c.shape[0], -1, 1, 1)
        bias = self.bias(c).view(c.shape[0], -1, 1, 1)
        out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, False, 0.1, self.eps)
        return out * gain + bias


class OutputBN(nn.Module):
    """BigGAN's unconditional ``bn`` (stored statistics, learnt ``gain``/``bias``)."""

    stored_mean: Tensor
    stored_var: Tensor

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("stored_mean", torch.zeros(channels))
        self.register_buffer("stored_var", torch.ones(channels))
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, False, 0.1, self.eps)


class GBlock(nn.Module):
    """Up-sampling residual block (see the module docstring)."""

    def __init__(self, cin: int, cout: int, cfg: BigGANConfig) -> None:
        super().__init__()
        self.conv1 = SNConv2d(cin, cout, 3, padding=1, eps=cfg.sn_eps)
        self.conv2 = SNConv2d(cout, cout, 3, padding=1, eps=cfg.sn_eps)
        self.conv_sc = SNConv2d(cin, cout, 1, padding=0, eps=cfg.sn_eps)
        self.bn1 = ConditionalBN(cin, cfg.cond_dim, cfg.bn_eps, cfg.sn_eps)
        self.bn2 = ConditionalBN(cout, cfg.cond_dim, cfg.bn_eps, cfg.sn_eps)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.relu(self.bn1(x, c))
        h = F.interpolate(h, scale_factor=2)
        x = F.interpolate(x, scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.conv_sc(x)


class SelfAttention(nn.Module):
    """SA-GAN non-local block as BigGAN implements it; ``x`` ``[B, C, H, W]`` with even ``H``, ``W``."""

    def __init__(self, ch: int, sn_eps: float) -> None:
        super().__init__()
        self.ch = ch
        self.theta = SNConv2d(ch, ch // 8, 1, padding=0, bias=False, eps=sn_eps)
        self.phi = SNConv2d(ch, ch // 8, 1, padding=0, bias=False, eps=sn_eps)
        self.g = SNConv2d(ch, ch // 2, 1, padding=0, bias=False, eps=sn_eps)
        self.o = SNConv2d(ch // 2, ch, 1, padding=0, bias=False, eps=sn_eps)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        n, hw = x.shape[0], x.shape[2] * x.shape[3]
        theta = self.theta(x).view(n, self.ch // 8, hw)
        phi = F.max_pool2d(self.phi(x), [2, 2]).view(n, self.ch // 8, hw // 4)
        g = F.max_pool2d(self.g(x), [2, 2]).view(n, self.ch // 2, hw // 4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(n, self.ch // 2, x.shape[2], x.shape[3]))
        return self.gamma * o + x


class ICGANGenerator(nn.Module):
    """IC-GAN's BigGAN generator without class conditioning; ``forward(z [B, >= dim_z], feats [B, feat_dim])``
    -> images ``[B, 3, resolution, resolution]`` in [-1, 1].  ``feats`` are L2-normalised instance features;
    noise values beyond ``dim_z`` are ignored (as the reference ignores the remainder of its split)."""

    def __init__(self, cfg: BigGANConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or BigGANConfig()
        self.cfg = cfg
        self.shared = nn.Embedding(cfg.n_classes, cfg.shared_dim)
        self.shared_feat = SNLinear(cfg.feat_dim, cfg.shared_dim_feat, eps=cfg.sn_eps)
        self.linear = SNLinear(cfg.z_chunk, cfg.in_channels[0] * cfg.bottom_width**2, eps=cfg.sn_eps)
        blocks: list[nn.ModuleList] = []
        for cin, cout, res in zip(cfg.in_channels, cfg.out_channels, cfg.block_resolutions, strict=True):
            layers: list[nn.Module] = [GBlock(cin, cout, cfg)]
            if res in cfg.attention:
                layers.append(SelfAttention(cout, cfg.sn_eps))
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        last = cfg.out_channels[-1]
        self.output_layer = nn.Sequential(
            OutputBN(last, cfg.bn_eps), nn.ReLU(), SNConv2d(last, 3, 3, padding=1, eps=cfg.sn_eps)
        )

    def forward(self, z: Tensor, feats: Tensor) -> Tensor:
        cfg = self.cfg
        if z.shape[1] < cfg.dim_z:
            raise ValueError(f"z needs >= {cfg.dim_z} values per sample, got {z.shape[1]}")
        y = self.shared_feat(feats)
        zs = torch.split(z[:, : cfg.dim_z], cfg.z_chunk, 1)
        h = self.linear(zs[0]).view(z.shape[0], -1, cfg.bottom_width, cfg.bottom_width)
        for index, layers in enumerate(self.blocks):
            c = torch.cat([y, zs[index + 1]], 1)
            assert isinstance(layers, nn.ModuleList)
            for layer in layers:
                h = layer(h, c)
        return torch.tanh(self.output_layer(h))


def config_from_state_dict(
    sd: Mapping[str, Tensor], sn_eps: float = 1e-6, bn_eps: float = 1e-5
) -> BigGANConfig:
    """The :class:`BigGANConfig` whose parameter shapes are those of the generator state dict ``sd``.

    Raises ``ValueError`` (with what is wrong) for a state dict that is not an instance-conditioned BigGAN
    generator, e.g. a class-conditional ``cc_icgan`` one (its BN linears also take the class embedding).
    """
    needed = ["shared.weight", "shared_feat.weight", "linear.weight", "output_layer.2.weight"]
    absent = [k for k in needed if k not in sd]
    if absent:
        raise ValueError(f"not an IC-GAN BigGAN generator state dict (no {', '.join(absent)})")
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    resolution = 4 * 2**n_blocks
    if resolution not in CHANNEL_MULTIPLIERS:
        raise ValueError(
            f"{n_blocks} generator blocks (resolution {resolution}) is not a known BigGAN layout"
        )
    width = int(sd["linear.weight"].shape[0])
    ch = width // (CHANNEL_MULTIPLIERS[resolution][0][0] * 16)
    attention = tuple(
        4 * 2 ** (int(k.split(".")[1]) + 1) for k in sd if k.startswith("blocks.") and k.endswith(".1.gamma")
    )
    shared_dim_feat, feat_dim = (int(s) for s in sd["shared_feat.weight"].shape)
    n_classes, shared_dim = (int(s) for s in sd["shared.weight"].shape)
    cfg = BigGANConfig(
        resolution=resolution, ch=ch, z_chunk=int(sd["linear.weight"].shape[1]), shared_dim=shared_dim,
        n_classes=n_classes, feat_dim=feat_dim, shared_dim_feat=shared_dim_feat, attention=attention,
        bn_eps=bn_eps, sn_eps=sn_eps,
    )  # fmt: skip
    bn_in = sd.get("blocks.0.0.bn1.gain.weight")
    if bn_in is not None and int(bn_in.shape[1]) != cfg.cond_dim:
        raise ValueError(
            f"conditional BN takes {int(bn_in.shape[1])} inputs, an instance-only IC-GAN takes "
            f"{cfg.cond_dim} (= {shared_dim_feat} + {cfg.z_chunk}); a class-conditional cc_icgan generator "
            f"is not supported"
        )
    return cfg


def state_dict_shapes(module: nn.Module) -> list[tuple[str, list[int]]]:
    """``(key, shape)`` of every entry of ``module.state_dict()``, in state-dict order."""
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]
