"""An independent numpy integer simulation of Loihi's CUBA LIF, the test oracle for Lava.

Written from the equations in ``docs/deployment.md`` secs. 2 and 4, not from the
exporter: per sample, from zero state, every layer takes its input in the same step
(the delays Lava adds are uniform per layer, so they only shift time).
"""
import numpy as np

U_LIM = 2**23


def _decay(x, d):
    p = x.astype(np.int64) * (4096 - d)
    return np.sign(p) * (np.abs(p) // 4096)


def simulate(layers, spikes, events=None, bias=None, record=None):
    """Output spike counts ``(N, C)``.

    Args:
        layers: list of dicts with ``w`` (int ``(n_out, n_in)``), ``exp``, ``du``, ``dv``, ``vth``.
        spikes: ``(T, N, F)`` 0/1.
        events: a dict that, when given, counts the ``"u_wraps"`` and ``"v_clips"`` that happened.
        bias: current encoding: ``(N, n_0)`` integer bias ``bias_mant << bias_exp`` of the first
            layer per sample, which then gets no synaptic input (``spikes`` is ignored except its ``T``).
        record: a list that, when given, receives per layer the spikes ``(T, N, n_l)``.
    """
    events = {} if events is None else events
    events.setdefault("u_wraps", 0)
    events.setdefault("v_clips", 0)
    T, N, _ = spikes.shape
    counts = np.zeros((N, layers[-1]["w"].shape[0]), dtype=np.int64)
    rec = [np.zeros((T, N, l["w"].shape[0]), np.uint8) for l in layers]
    for k in range(N):
        u = [np.zeros(l["w"].shape[0], np.int64) for l in layers]
        v = [np.zeros(l["w"].shape[0], np.int64) for l in layers]
        for t in range(T):
            s = spikes[t, k].astype(np.int64)
            for i, l in enumerate(layers):
                if i == 0 and bias is not None:  # no synapses: u stays 0, the bias enters v below
                    a = np.zeros(l["w"].shape[0], np.int64)
                else:
                    a = l["w"].astype(np.int64) @ s
                a = a * 2 ** l["exp"] if l["exp"] >= 0 else a // 2 ** (-l["exp"])
                uu = _decay(u[i], l["du"] + 1) + a * 64
                events["u_wraps"] += int(((uu > U_LIM) | (uu <= -U_LIM)).sum())
                uu = np.where(uu > U_LIM, uu - 2 * U_LIM, uu)
                uu = np.where(uu <= -U_LIM, uu + 2 * U_LIM, uu)
                u[i] = uu
                vv = _decay(v[i], l["dv"]) + u[i]
                if i == 0 and bias is not None:
                    vv = vv + np.asarray(bias[k], np.int64)
                events["v_clips"] += int((np.abs(vv) > U_LIM - 1).sum())
                v[i] = np.clip(vv, -(U_LIM - 1), U_LIM - 1)
                s = (v[i] > l["vth"] * 64).astype(np.int64)
                v[i][s == 1] = 0
                rec[i][t, k] = s
            counts[k] += s
    if record is not None:
        record.extend(rec)
    return counts
