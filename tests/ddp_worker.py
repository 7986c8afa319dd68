"""A small DPAP training run for ``tests/test_ddp.py``, in one process or one torchrun rank.

    python -m torch.distributed.run --nproc_per_node 2 --master_port P tests/ddp_worker.py OUT_DIR

writes ``OUT_DIR/rank{r}.safetensors`` per rank (:func:`dpap_deploy.tensorfile.save_tree`, format
:data:`RESULT_FORMAT`); :func:`run` is also called in the test process for
the single-process reference on the same global batches.

The setting is chosen so that the numbers are meaningful: 1241 = 40 * 31 + 1 training
digits in global batches of 31, so every batch splits unevenly over 2 ranks (15 + 16) and
the last batch of each epoch holds one sample (rank 0's shard is empty); a network that
spikes from the first batch (``init_gain`` 6, ``T`` 16) and a DPAP configuration that
prunes from the second epoch on (``e0`` 1, ``R`` starting at 2, ``c`` 1.5).
"""
from __future__ import annotations

import os
import sys

import torch

#: the format name of the per-rank result files
RESULT_FORMAT = "ddp-worker-result"

N_TRAIN = 40 * 31 + 1
BATCH = 31
EPOCHS = 4


def run(dist=None, epochs: int = EPOCHS, hidden=(16, 16), time_steps: int = 16, init_gain: float = 6.0) -> dict:
    """Train the small network; return what the test compares (tensors on CPU).

    Besides the final model and DPAP state, every epoch's DPAP statistics as the pruning
    rule reads them (``M``, ``A``, ``theta``, ``k``: ``end_epoch`` resets ``M`` and ``A``
    afterwards) and the masks it leaves, recorded by wrapping ``DPAPState.end_epoch``.
    """
    from dpap_deploy.data import Dataset, load_digits
    from dpap_deploy.train.dpap import DPAPConfig, DPAPState, RuleConstants
    from dpap_deploy.train.loop import TrainConfig, train
    from dpap_deploy.train.models import SpikingMLP

    full = load_digits()
    ds = Dataset("digits-1241", full.x_train[:N_TRAIN], full.y_train[:N_TRAIN], full.x_test, full.y_test, 10)
    cfg = TrainConfig(hidden=tuple(hidden), epochs=epochs, batch_size=BATCH, lr=5e-3, time_steps=time_steps, seed=0,
                      fixed_point_eval=False)
    k = RuleConstants(c=1.5, b=2.0, rho=13.0)
    dpap_cfg = DPAPConfig(e0=1, r_init=2.0, fc_neuron=k, fc_synapse=k)
    torch.manual_seed(cfg.seed)
    model = SpikingMLP([ds.n_features, *cfg.hidden, ds.n_classes], cfg.lif, init_gain=init_gain)

    per_epoch = []
    original = DPAPState.end_epoch

    def recording_end_epoch(state, epoch, weights=None):
        rec = {"epoch": epoch, "k": state.k}
        for name in ("M", "A", "theta"):
            rec[name] = {l: t.clone() for l, t in getattr(state, name).items()}
        out = original(state, epoch, weights)
        rec["neuron_alive"] = {l: t.clone() for l, t in state.neuron_alive.items()}
        rec["synapse_alive"] = {l: t.clone() for l, t in state.synapse_alive.items()}
        per_epoch.append(rec)
        return out

    DPAPState.end_epoch = recording_end_epoch
    try:
        res = train(ds, cfg, dpap_cfg, progress=False, model=model, dist=dist)
    finally:
        DPAPState.end_epoch = original
    st = res.state
    return {
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in res.history],
        "per_epoch": per_epoch,
        "widths": res.model.widths(),
        "weights": [layer.weight.detach().clone() for layer in res.model.layers],
        "masks": [m.clone() for m in res.model.masks],
        "R_neuron": {l: st.R_neuron[l].clone() for l in st.layers},
        "R_synapse": {l: st.R_synapse[l].clone() for l in st.layers},
        "_model": res.model,
        "_state": st,
    }


def main(out_dir: str, **kwargs) -> int:
    from dpap_deploy.train.distributed import DistributedError, DistributedRun

    torch.set_num_threads(1)
    dist = DistributedRun()
    try:
        out = run(dist, **kwargs)
        # the divergence check: rank 1 flips one synapse of fc2; every rank must refuse, naming fc2
        model, state = out.pop("_model"), out.pop("_state")
        if dist.rank == 1:
            model.masks[1][0, 0] = ~model.masks[1][0, 0]
        try:
            dist.check_masks(model, state)
            out["divergence_error"] = None
        except DistributedError as exc:
            out["divergence_error"] = str(exc)
        if dist.rank == 1:
            model.masks[1][0, 0] = ~model.masks[1][0, 0]
        # the same for timestep masks: both ranks gate fc1, rank 1 silences one more (neuron, step)
        mask = torch.ones(model.widths()[0], 8, dtype=torch.bool)
        mask[0, 3] = False
        if dist.rank == 1:
            mask[1, 5] = False
        model.set_time_mask(0, mask)
        try:
            dist.check_masks(model, state)
            out["time_divergence_error"] = None
        except DistributedError as exc:
            out["time_divergence_error"] = str(exc)
        out["world_size"] = dist.world_size
        from dpap_deploy.tensorfile import save_tree

        save_tree(os.path.join(out_dir, f"rank{dist.rank}.safetensors"), out, RESULT_FORMAT, 1)
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    # OUT_DIR [EPOCHS [HIDDEN [T [INIT_GAIN]]]], e.g. "runs/x 10 256,128 32 2": longer runs for measuring
    argv = sys.argv[1:]
    extra = {}
    if len(argv) > 1:
        extra["epochs"] = int(argv[1])
    if len(argv) > 2:
        extra["hidden"] = [int(h) for h in argv[2].split(",")]
    if len(argv) > 3:
        extra["time_steps"] = int(argv[3])
    if len(argv) > 4:
        extra["init_gain"] = float(argv[4])
    sys.exit(main(argv[0], **extra))
