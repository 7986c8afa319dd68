"""Write the NIR test files of tests/test_nir_graphs.py with other frameworks' own NIR writers.

Run once per framework, each in an environment that has it (README.md beside this file gives the
versions and the commands); each run writes only its own ``FRAMEWORK_*.nir`` files here::

    python tests/data/nir/make_files.py norse      # our .venv: norse 1.1.0 (norse.torch.to_nir)
    python tests/data/nir/make_files.py snntorch   # snntorch 1.0.0 next to our pins (export_to_nir)
    python tests/data/nir/make_files.py sinabs     # sinabs 3.1.3, a venv of its own (sinabs.to_nir; nir<=1.0.4)

Every graph is the writer's output for a small torch module, written with ``nir.write``: no node,
edge or parameter is edited by hand. Weights are drawn with a fixed seed and scaled so that the
populations spike on random input. Norse's writer stores ``dt / tau_inv`` as the time constant
(norse issue 411); its modules are given ``tau_*_inv`` values that make the stored constants
ordinary (``tau_mem_inv = 0.1`` -> ``tau = 1e-3 / 0.1 = 10 ms``): the tests read the file, they do
not compare with Norse's own module.
"""
import os
import sys

import nir
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _seeded_linear(n_in, n_out, scale, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(n_out, n_in, generator=g) - 0.3) * scale)
        if bias:
            lin.bias.copy_((torch.rand(n_out, generator=g) - 0.5) * scale * 0.2)
    return lin


def _seeded_conv(c_in, c_out, k, scale, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(c_in, c_out, k, **kw)
    with torch.no_grad():
        conv.weight.copy_((torch.rand(conv.weight.shape, generator=g) - 0.3) * scale)
        if conv.bias is not None:
            conv.bias.copy_((torch.rand(c_out, generator=g) - 0.5) * scale * 0.2)
    return conv


def _write(name, graph):
    if any(getattr(n, "input_shape", 0) is None for n in graph.nodes.values()):
        graph.infer_types()  # nir's own shape inference fills Conv2d.input_shape, which the writers leave None
    path = os.path.join(HERE, name)
    nir.write(path, graph)
    print("wrote", path, sorted(type(n).__name__ for n in graph.nodes.values()))


def norse_files():
    import norse.torch as norse

    # parameters per neuron: nir.write refuses scalar datasets; tau = 1e-3 / 0.1 = 10 ms etc.
    lif = lambda *n: norse.LIFBoxCell(norse.LIFBoxParameters(  # noqa: E731
        tau_mem_inv=torch.full(n, 0.1), v_th=torch.ones(n), v_leak=torch.zeros(n)))
    cuba = lambda n: norse.LIFCell(norse.LIFParameters(  # noqa: E731  tau_syn 5 ms, tau_mem 10 ms
        tau_syn_inv=torch.full((n,), 0.2), tau_mem_inv=torch.full((n,), 0.1), v_th=torch.ones(n), v_leak=torch.zeros(n)))
    li = norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.full((3,), 0.05), v_leak=torch.zeros(3)))
    m = norse.SequentialState(_seeded_linear(6, 5, 30.0, seed=1), lif(5), _seeded_linear(5, 3, 30.0, seed=2), lif(3))
    _write("norse_lif.nir", norse.to_nir(m, torch.zeros(1, 6)))
    m = norse.SequentialState(_seeded_linear(6, 5, 3.0, seed=3), cuba(5), _seeded_linear(5, 3, 20.0, seed=4), cuba(3))
    _write("norse_cubalif.nir", norse.to_nir(m, torch.zeros(1, 6)))
    m = norse.SequentialState(_seeded_linear(6, 4, 1.5, seed=5), norse.IAFCell(norse.IAFParameters(v_th=torch.ones(4))),
                              _seeded_linear(4, 3, 1.5, seed=6), norse.IAFCell(norse.IAFParameters(v_th=torch.ones(3))))
    _write("norse_if.nir", norse.to_nir(m, torch.zeros(1, 6)))
    m = norse.SequentialState(_seeded_linear(6, 5, 30.0, seed=7), lif(5), _seeded_linear(5, 3, 10.0, seed=8), li)
    _write("norse_li.nir", norse.to_nir(m, torch.zeros(1, 6)))
    m = norse.SequentialState(_seeded_conv(2, 3, 3, 15.0, seed=9, padding=1, stride=2), lif(3, 3, 3),
                              _seeded_conv(3, 2, 3, 1.0, seed=10, stride=3), lif(2, 1, 1))  # to_nir writes no Flatten
    _write("norse_conv.nir", norse.to_nir(m, torch.zeros(2, 6, 6)))  # unbatched: Input takes its shape


def snntorch_files():
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    def leaky(*n, **kw):
        return snn.Leaky(beta=torch.full(n, 0.9), threshold=torch.ones(n), init_hidden=True, **kw)

    def synaptic(n, **kw):
        return snn.Synaptic(alpha=torch.full((n,), 0.8), beta=torch.full((n,), 0.9), threshold=torch.ones(n),
                            init_hidden=True, **kw)

    def save(name, net, shape):
        _write(name, export_to_nir(net, torch.zeros(1, *shape), ignore_dims=[0]))

    save("snntorch_ff.nir", torch.nn.Sequential(_seeded_linear(6, 5, 1.0, seed=11), leaky(5),
                                                _seeded_linear(5, 3, 1.0, seed=12), synaptic(3, output=True)), (6,))
    rleaky = snn.RLeaky(beta=0.9, linear_features=4, init_hidden=True)
    with torch.no_grad():
        rleaky.recurrent.weight.copy_(_seeded_linear(4, 4, 0.5, seed=13).weight)
        rleaky.recurrent.bias.zero_()
    save("snntorch_rleaky.nir", torch.nn.Sequential(_seeded_linear(6, 4, 1.0, seed=14), rleaky,
                                                    _seeded_linear(4, 3, 1.0, seed=15), leaky(3, output=True)), (6,))
    rsyn = snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=4, init_hidden=True)
    with torch.no_grad():
        rsyn.recurrent.weight.copy_(_seeded_linear(4, 4, 0.5, seed=16).weight)
    save("snntorch_rsynaptic.nir", torch.nn.Sequential(_seeded_linear(6, 4, 1.0, seed=17), rsyn,
                                                       _seeded_linear(4, 3, 1.0, seed=18), synaptic(3, output=True)), (6,))
    # bias-free torch Linear layers are written as nir.Linear; a diagonal RLeaky (all_to_all=False) as a
    # Linear loop of its per-neuron weights V
    rdiag = snn.RLeaky(beta=0.9, all_to_all=False, V=torch.tensor([0.5, -0.3, 0.8, 0.2]), init_hidden=True)
    save("snntorch_linear.nir", torch.nn.Sequential(_seeded_linear(6, 4, 1.0, bias=False, seed=27), rdiag,
                                                    _seeded_linear(4, 3, 1.0, bias=False, seed=28),
                                                    leaky(3, output=True)), (6,))
    save("snntorch_conv.nir", torch.nn.Sequential(_seeded_conv(2, 3, 3, 1.0, seed=19, padding=1), leaky(3, 6, 6),
                                                  torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                                  _seeded_linear(27, 4, 1.0, seed=20), leaky(4, output=True)), (2, 6, 6))


def sinabs_files():
    import sinabs
    import sinabs.layers as sl

    def save(name, net, shape):
        net(torch.zeros(1, *shape))  # sinabs sizes its populations' state on the first call
        _write(name, sinabs.to_nir(net, torch.zeros(1, *shape)))

    # the *Squeeze layers take (batch * time, ...) tensors, so the sample (1, ...) is one step of one sample
    iaf = lambda: sl.IAFSqueeze(batch_size=1)  # noqa: E731
    save("sinabs_iaf.nir", torch.nn.Sequential(_seeded_linear(6, 5, 1.0, seed=21), iaf(),
                                               _seeded_linear(5, 3, 1.0, seed=22), iaf()), (6,))
    save("sinabs_lif.nir", torch.nn.Sequential(_seeded_linear(6, 5, 1.0, seed=23),
                                               sl.LIFSqueeze(tau_mem=torch.full((5,), 20.0), spike_threshold=torch.ones(5),
                                                             batch_size=1),
                                               _seeded_linear(5, 3, 1.0, seed=24),
                                               sl.ExpLeakSqueeze(tau_mem=torch.full((3,), 10.0), batch_size=1)), (6,))
    save("sinabs_conv.nir", torch.nn.Sequential(_seeded_conv(2, 3, 3, 1.0, seed=25, padding=1), iaf(),
                                                sl.SumPool2d(2), torch.nn.Flatten(),
                                                _seeded_linear(27, 4, 0.1, seed=26), iaf()), (2, 6, 6))


if __name__ == "__main__":
    {"norse": norse_files, "snntorch": snntorch_files, "sinabs": sinabs_files}[sys.argv[1]]()
