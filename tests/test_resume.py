"""Checkpoints, SIGINT and --resume: an interrupted run continues to the same result."""
import os
from dataclasses import replace
import signal

import pytest
import torch

from dpap_deploy.errors import CheckpointError, TrainingInterrupted
from dpap_deploy.train.checkpoint import load_checkpoint
from dpap_deploy.train.dpap import DPAPConfig, RuleConstants
from dpap_deploy.train.loop import TrainConfig, train

# prunes from epoch 1 so masks change between the interruption and the end
AGGRESSIVE = DPAPConfig(e0=1, r_init=1.0, fc_neuron=RuleConstants(1.5, 2.0, 13.0),
                        fc_synapse=RuleConstants(1.5, 2.0, 13.0))
CFG = TrainConfig(epochs=4, time_steps=6, hidden=(24, 16), lr=1e-2, seed=3, batch_size=64)


def _sigint_at(epoch, batch):
    def hook(e, b):
        if (e, b) == (epoch, batch):
            os.kill(os.getpid(), signal.SIGINT)
    return hook


def _same(a, b):
    assert [m.shape for m in a.model.masks] == [m.shape for m in b.model.masks]
    for ma, mb in zip(a.model.masks, b.model.masks):
        assert torch.equal(ma, mb)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    sa, sb = a.state.state_dict(), b.state.state_dict()
    for name in sa["tensors"]:
        for l in sa["tensors"][name]:
            assert torch.equal(sa["tensors"][name][l], sb["tensors"][name][l]), (name, l)
    keys = ("loss", "train_accuracy", "test_accuracy", "fixed_point_accuracy", "synapses", "layers")
    assert [{k: h[k] for k in keys} for h in a.history] == [{k: h[k] for k in keys} for h in b.history]


@pytest.mark.parametrize("where", [(2, 5), (0, 0)])  # mid-epoch after pruning began; the very first batch
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(digits, tmp_path, where):
    whole = train(digits, CFG, AGGRESSIVE, progress=False, checkpoint=str(tmp_path / "whole.safetensors"))
    assert whole.history[-1]["synapses"] < whole.history[0]["synapses"], "the test needs pruning to happen"

    path = str(tmp_path / "cut.safetensors")
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN under nohup or `cmd &`
    with pytest.raises(TrainingInterrupted) as exc:
        train(digits, CFG, AGGRESSIVE, progress=False, checkpoint=path, on_batch=_sigint_at(*where))
    assert (exc.value.epoch, exc.value.batch) == (where[0], where[1] + 1)
    ckpt = load_checkpoint(path)
    assert ckpt["position"]["epoch"] == where[0] and ckpt["position"]["batch"] == where[1] + 1
    assert len(ckpt["history"]) == where[0]
    # train()'s SIGINT handler is gone again: the one before it is back
    assert signal.getsignal(signal.SIGINT) is before

    resumed = train(digits, CFG, AGGRESSIVE, progress=False, checkpoint=path, resume=ckpt)
    _same(whole, resumed)
    # the final checkpoint says training is complete
    assert load_checkpoint(path)["position"] == {"epoch": CFG.epochs, "batch": 0, "loss_sum": 0.0, "correct": 0}


def test_resume_from_an_epoch_checkpoint(digits, tmp_path):
    """A crash (or kill -9) between epochs leaves the last epoch's checkpoint: continuing from it is exact too."""
    whole = train(digits, CFG, AGGRESSIVE, progress=False)
    path = str(tmp_path / "c.safetensors")

    class Crash(Exception):
        pass

    def crash_after_epoch_2(rec):
        if rec["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(digits, CFG, AGGRESSIVE, progress=False, checkpoint=path, on_epoch=crash_after_epoch_2)
    ckpt = load_checkpoint(path)
    assert ckpt["position"]["epoch"] == 3 and ckpt["position"]["batch"] == 0 and len(ckpt["history"]) == 3
    _same(whole, train(digits, CFG, AGGRESSIVE, progress=False, resume=ckpt))


def test_same_seed_same_run_and_another_seed_differs(digits):
    a = train(digits, CFG, AGGRESSIVE, progress=False)
    b = train(digits, CFG, AGGRESSIVE, progress=False)
    _same(a, b)
    other = train(digits, replace(CFG, seed=4), AGGRESSIVE, progress=False)
    assert not all(torch.equal(x, y) for x, y in zip(a.model.masks, other.model.masks)) or \
        a.history[-1]["loss"] != other.history[-1]["loss"]


def test_bad_checkpoints_are_named(tmp_path):
    """(tests/test_safe_load.py tries every refusal of the file format itself.)"""
    from safetensors.torch import save_file

    from dpap_deploy.tensorfile import save_tree
    from dpap_deploy.train.checkpoint import FORMAT, REQUIRED, VERSION

    with pytest.raises(CheckpointError, match="none.safetensors: no checkpoint \\(file not found\\)"):
        load_checkpoint(str(tmp_path / "none.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a safetensors file"):
        load_checkpoint(str(junk))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: a torch.save zip archive .* not loaded, because unpickling "
                       "can run code"):
        load_checkpoint(str(foreign))
    save_file({"w": torch.ones(2)}, str(foreign))  # someone else's safetensors file
    with pytest.raises(CheckpointError, match="foreign.pt: a safetensors file, but not one written by dpap-deploy"):
        load_checkpoint(str(foreign))
    save_tree(str(foreign), [1, 2], FORMAT, VERSION)
    with pytest.raises(CheckpointError, match="holds list"):
        load_checkpoint(str(foreign))
    save_tree(str(foreign), {k: 0 for k in REQUIRED if k != "optimizer"}, FORMAT, VERSION)
    with pytest.raises(CheckpointError, match="foreign.pt: checkpoint lacks optimizer$"):
        load_checkpoint(str(foreign))


def test_truncated_checkpoint_is_named(digits, tmp_path):
    path = tmp_path / "c.safetensors"
    train(digits, replace(CFG, epochs=1), AGGRESSIVE, progress=False, checkpoint=str(path))
    data = path.read_bytes()
    assert load_checkpoint(str(path))["position"]["epoch"] == 1
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.safetensors: a (corrupt or )?truncated safetensors file"):
        load_checkpoint(str(path))
