"""``pruning.png`` and ``raster.png``: the developmental curve and one sample's spikes.

Both are written with matplotlib's Agg backend (no display needed), atomically, next to
``report.json``; ``resources.png`` lives in :mod:`dpap_deploy.resources`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from dpap_deploy.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pruning(history: Sequence[dict], path: str, title: str = "") -> Optional[str]:
    """Per-layer synapses and neurons alive, and accuracy, per epoch (DPAP's developmental curve).

    Args:
        history: ``train_log.jsonl`` records: ``epoch``, ``layers`` ``{name: {neurons, synapses}}``,
            ``test_accuracy`` and optionally ``train_accuracy``, ``fixed_point_accuracy`` (fractions).
        path: the PNG to write.

    Returns:
        ``path``, or None when there is no history (a run exported ``--from`` another one).
    """
    if not history:
        return None
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    names = list(history[0]["layers"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for key, ax in zip(("synapses", "neurons"), axes):
        for name in names:
            ax.plot(epochs, [h["layers"].get(name, {}).get(key, 0) for h in history], marker=".", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{key} alive")
        ax.set_title(f"{key} per layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    for key, label in (("train_accuracy", "train (float)"), ("test_accuracy", "test (float)"),
                       ("fixed_point_accuracy", "test (fixed point, emulator)")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [np.nan if v is None else 100 * v for v in values], marker=".", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def plot_raster(populations: List[tuple], path: str, title: str = "") -> str:
    """Spike rasters of one sample, one panel per population (input first).

    Args:
        populations: ``(name, spikes)`` with ``spikes`` ``(T, n)`` 0/1 (time steps x neurons).
        path: the PNG to write.
    """
    plt = _pyplot()
    heights = [max(1.0, min(4.0, s.shape[1] / 40)) for _, s in populations]
    fig, axes = plt.subplots(len(populations), 1, figsize=(9, 1.2 + 1.3 * sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, spikes) in zip(axes[:, 0], populations):
        t, n = np.nonzero(np.asarray(spikes))
        ax.scatter(t, n, s=14, marker="|", color="black", linewidths=0.9)
        ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
        ax.set_xlim(-0.5, spikes.shape[0] - 0.5)
        ax.set_ylabel(f"{name}\n({spikes.shape[1]})", fontsize=8)
        ax.text(1.0, 1.0, f"{int(np.sum(spikes))} spikes", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    axes[-1, 0].set_xlabel("time step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
