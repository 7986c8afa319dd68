"""Tiny netx files written by lava-dl's own writer (never by hand): ``slayer`` blocks with seeded
weights, exported the way lava-dl's tutorials do (an ``h5py.File``, a ``layer`` group,
``blocks[i].export_hdf5(layer.create_group(f"{i}"))``).

Weights: seeded random floats that slayer's 8-bit quantiser (``neuron.quantize_8bit``) turns into the
even integers in ``[-256, 254]`` it writes. Biases: a ``MeanOnlyBatchNorm`` in the neuron whose
``running_mean`` is set so that the written ``bias = -running_mean * 64`` is the given integers (give even
ones: the neuron's 8-bit quantiser rounds the norm's mean to steps of 2/64, so odd ones come out even).
Delays: the block's ``slayer.axon.Delay`` set to the given integers (the writer floors them).
"""
from __future__ import annotations

from typing import Optional, Sequence

import h5py
import numpy as np
import torch

#: CUBA neuron parameters (slayer units): threshold 1.0 -> vThMant 64, decays 1/4 and 3 % per step
CUBA = {"threshold": 1.0, "current_decay": 0.25, "voltage_decay": 0.03}


def _slayer():
    import lava.lib.dl.slayer as slayer

    return slayer


def write_blocks(blocks, path: str, x: torch.Tensor) -> str:
    """Run ``x`` (``(N, C, ..., T)``) once through ``blocks`` (slayer sizes some parts on the first call),
    then write every block with its own ``export_hdf5`` into ``path``."""
    blocks = torch.nn.ModuleList(blocks).eval()
    with torch.no_grad():
        for b in blocks:
            x = b(x)
    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layer.create_group(f"{i}"))
    return path


def _seed_weights(blocks, seed: int, scale: float) -> None:
    """Uniform weights in ``[-1, 1) * scale / sqrt(fan-in)`` plus ``2 / fan-in`` (slayer units; threshold
    1.0): a slight excitatory drift, so spikes reach the output without saturating it."""
    g = torch.Generator().manual_seed(seed)
    for b in blocks:
        syn = getattr(b, "synapse", None)
        if syn is not None and getattr(syn, "weight", None) is not None:
            fan_in = int(np.prod(syn.weight.shape[1:]))
            with torch.no_grad():
                syn.weight.copy_((torch.rand(syn.weight.shape, generator=g) * 2 - 1) * scale / fan_in ** 0.5
                                 + 2.0 / fan_in)


def _set_bias(block, bias: Sequence[float]) -> None:
    """Give ``block``'s ``MeanOnlyBatchNorm`` the running mean whose written bias is ``bias`` (integers)."""
    block.neuron.norm.running_mean = -torch.tensor(bias, dtype=torch.float32) / 64.0


def _set_delay(block, delay: Sequence[int]) -> None:
    with torch.no_grad():
        block.delay.delay.data = torch.tensor(delay, dtype=torch.float32).reshape(block.delay.delay.shape)


def dense_net(path: str, sizes=(6, 5, 3), seed: int = 0, bias: Optional[Sequence[int]] = None,
              delay: Optional[Sequence[int]] = None, scale: float = 4.0, neuron: Optional[dict] = None) -> str:
    """CUBA ``Dense`` blocks ``sizes[0] -> ... -> sizes[-1]``; ``bias`` (integers, ``sizes[1]`` of them) and
    ``delay`` (time steps, ``sizes[1]``) on the first block."""
    slayer = _slayer()
    blocks = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        p = dict(neuron or CUBA)
        if k == 0 and bias is not None:
            p["norm"] = slayer.neuron.norm.MeanOnlyBatchNorm
        blocks.append(slayer.block.cuba.Dense(p, a, b, delay=(k == 0 and delay is not None)))
    _seed_weights(blocks, seed, scale)
    x = (torch.rand(1, sizes[0], 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float()
    _size(blocks[0], x)
    if bias is not None:
        _set_bias(blocks[0], bias)
    if delay is not None:
        _set_delay(blocks[0], delay)
    return write_blocks(blocks, path, x)


def _size(block, x: torch.Tensor) -> None:
    """One evaluation-mode call, which sizes the block's norm and delay without updating the norm's mean."""
    block.eval()
    with torch.no_grad():
        block(x)


def conv_net(path: str, seed: int = 0, bias: Optional[Sequence[int]] = None, hw: int = 5, groups: int = 1,
             dilation: int = 1, scale: float = 4.0, delay: Optional[Sequence[int]] = None) -> str:
    """``Input`` (no neurons: the shape) -> CUBA ``Conv`` 2 -> 4 channels, 3x3, padding 1 -> ``Flatten``
    -> ``Dense`` 3; ``bias`` (4 integers, per channel) and ``delay`` (4 time steps, per channel) on the conv."""
    slayer = _slayer()
    p = dict(CUBA)
    if bias is not None:
        p["norm"] = slayer.neuron.norm.MeanOnlyBatchNorm
    conv = slayer.block.cuba.Conv(p, 2, 4, 3, padding=dilation, stride=1, dilation=dilation, groups=groups,
                                  delay=delay is not None)
    dense = slayer.block.cuba.Dense(CUBA, 4 * hw * hw, 3)
    blocks = [slayer.block.cuba.Input(None, delay_shift=False), conv, slayer.block.cuba.Flatten(), dense]
    _seed_weights(blocks, seed, scale)
    x = (torch.rand(1, 2, hw, hw, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float()
    _size(conv, x)
    if bias is not None:
        _set_bias(conv, bias)
    if delay is not None:
        _set_delay(conv, delay)
    return write_blocks(blocks, path, x)


def sdnn_net(path: str, sizes=(6, 4, 3), seed: int = 0, with_input: bool = False) -> str:
    """Sigma-delta ``Dense`` blocks (ReLU, threshold 0.1); with ``with_input`` a sigma-delta ``Input`` first."""
    slayer = _slayer()
    p = {"threshold": 0.1, "activation": torch.nn.functional.relu}
    blocks = [slayer.block.sigma_delta.Input(p)] if with_input else []
    blocks += [slayer.block.sigma_delta.Dense(p, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    _seed_weights(blocks, seed, 2.0)
    return write_blocks(blocks, path, torch.rand(1, sizes[0], 4, generator=torch.Generator().manual_seed(seed)))


def input_neuron_net(path: str, seed: int = 0) -> str:
    """A CUBA ``Input`` block with neurons, weight and bias, then a ``Dense`` 6 -> 3."""
    slayer = _slayer()
    blocks = [slayer.block.cuba.Input(CUBA, weight=1.0, bias=0.25), slayer.block.cuba.Dense(CUBA, 6, 3)]
    _seed_weights(blocks, seed, 2.0)
    return write_blocks(blocks, path, (torch.rand(1, 6, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float())


def pool_net(path: str, seed: int = 0) -> str:
    """``Input`` -> CUBA ``Pool`` 2x2 -> ``Flatten`` -> ``Dense``: lava-dl writes a ``pool`` group."""
    slayer = _slayer()
    blocks = [slayer.block.cuba.Input(None, delay_shift=False), slayer.block.cuba.Pool(CUBA, 2),
              slayer.block.cuba.Flatten(), slayer.block.cuba.Dense(CUBA, 2 * 2 * 2, 3)]
    _seed_weights(blocks, seed, 2.0)
    return write_blocks(blocks, path, (torch.rand(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float())


def average_net(path: str, seed: int = 0) -> str:
    """``Dense`` 6 -> 4 then ``Average`` (2 outputs): lava-dl 0.6.0's ``Average.export_hdf5`` writes the
    group's ``type`` and then fails (it reads ``self.neuron``, which the block lacks); this is the file
    it leaves, closed properly."""
    slayer = _slayer()
    blocks = [slayer.block.cuba.Dense(CUBA, 6, 4), slayer.block.cuba.Average(2)]
    _seed_weights(blocks, seed, 2.0)
    try:
        write_blocks(blocks, path, (torch.rand(1, 6, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float())
    except AttributeError as exc:
        assert "neuron" in str(exc), exc
    return path


def random_spikes(shape, seed: int, p: float = 0.4) -> np.ndarray:
    """0/1 ``uint8`` spikes of ``shape``, seeded."""
    return (np.random.default_rng(seed).random(shape) < p).astype(np.uint8)
