"""An exactly invertible pixel-space "VAE" so that diffusers' FluxPipeline runs unchanged.

``PixelShuffleVAE`` has no weights.  ``encode`` is a pixel-unshuffle by
``factor`` (space-to-depth: (B, C, H, W) -> (B, C*f*f, H/f, W/f)) and ``decode``
is the matching pixel-shuffle, so ``decode(encode(x)) == x`` bit for bit.

How it plugs into FluxPipeline (diffusers 0.42):

* ``pipe.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)``;
  ``block_out_channels`` therefore has ``log2(factor) + 1`` entries (the values
  themselves are unused) and ``vae_scale_factor == factor``.  FluxPipeline then
  packs 2x2 latent pixels into one token, so one image token is a
  ``2*factor`` x ``2*factor`` pixel patch (4x4 for the default factor 2:
  32x32 px -> 16x16x12 latent -> 8x8 tokens x 48 channels; the transformer's
  ``in_channels`` must be ``4 * latent_channels``).
* Pixel convention: like AutoencoderKL, ``encode`` takes images in [-1, 1]
  (what ``VaeImageProcessor.preprocess`` produces) and ``decode`` returns
  [-1, 1] (``VaeImageProcessor.postprocess`` maps it to [0, 1] with
  ``x / 2 + 0.5``).
* Latent normalisation: FluxPipeline decodes ``latents / scaling_factor +
  shift_factor`` and img2img encodes ``(z - shift_factor) * scaling_factor``.
  Both default to identity here (1.0 / 0.0), so a latent is just rearranged
  pixels in [-1, 1].
* ``encode(x).latent_dist`` is a deterministic
  ``DiagonalGaussianDistribution`` (zero variance): ``.mode()`` and
  ``.sample(generator)`` both return the exact latent (``sample`` still draws
  from the generator, like a real VAE would).

Loading with ``DiffusionPipeline.from_pretrained``: ``save_pretrained`` records
this component in ``model_index.json`` as ``["massact_viz.shapes.vae",
"PixelShuffleVAE"]``.  diffusers 0.42 does not import modules named by a
repository, but resolves any name already in ``sys.modules``; so
``import massact_viz.shapes.vae`` before ``from_pretrained`` and it loads (the
saved folder holds ``config.json`` and a weights file with one 0-d buffer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["PixelShuffleVAE"]


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    """Weight-free, exactly invertible space-to-depth autoencoder (see module doc)."""

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        factor: int = 2,
        in_channels: int = 3,
        latent_channels: int | None = None,
        block_out_channels: tuple[int, ...] | None = None,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        sample_size: int = 32,
        force_upcast: bool = False,
    ):
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"factor must be a power of two, got {factor}")
        want_latent = in_channels * factor * factor
        if latent_channels is not None and latent_channels != want_latent:
            raise ValueError(f"latent_channels must be in_channels * factor**2 = {want_latent}")
        n_levels = int(math.log2(factor)) + 1
        if block_out_channels is not None and len(block_out_channels) != n_levels:
            raise ValueError(
                f"len(block_out_channels) must be log2(factor) + 1 = {n_levels} (FluxPipeline derives "
                "vae_scale_factor from it)"
            )
        # record the derived values in the config so pipelines can read them
        self.register_to_config(
            latent_channels=want_latent,
            block_out_channels=tuple(block_out_channels) if block_out_channels else (want_latent,) * n_levels,
        )
        self.factor = factor
        # A 0-d buffer gives the module a device and dtype (ModelMixin.device/.dtype and
        # diffusers' execution-device helpers look at parameters and buffers).  It is
        # persistent so that save_pretrained writes a (tiny) weights file, which
        # ModelMixin.from_pretrained requires.
        self.register_buffer("anchor", torch.zeros(()), persistent=True)

    # -- encode / decode -------------------------------------------------------------------

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.factor) if self.factor > 1 else x

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(z, self.factor) if self.factor > 1 else z

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Images in [-1, 1], (B, C, H, W) -> ``AutoencoderKLOutput(latent_dist)``."""
        z = self._encode(x)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        if not return_dict:
            return (dist,)
        return AutoencoderKLOutput(latent_dist=dist)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        """Latents (B, C*f*f, H/f, W/f) -> images in [-1, 1] (unclamped)."""
        x = self._decode(z)
        if not return_dict:
            return (x,)
        return DecoderOutput(sample=x)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, return_dict: bool = True, generator=None):
        z = self.encode(sample).latent_dist
        z = z.sample(generator) if sample_posterior else z.mode()
        return self.decode(z, return_dict=return_dict)

    # -- AutoencoderKL API compatibility (no-ops: nothing to slice or tile) -----------------

    def enable_slicing(self):
        pass

    def disable_slicing(self):
        pass

    def enable_tiling(self, *args, **kwargs):
        pass

    def disable_tiling(self):
        pass
