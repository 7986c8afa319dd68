"""dpap-deploy: DPAP-pruned spiking networks from Norse to Lava and Loihi budgets.

A run is a pipeline of stages (``dpap_deploy.pipeline``, ``dpap_deploy.stages``)::

    prepare -> data -> model -> train -> ir -> export -> verify -> map -> measure -> report

over units registered by name::

    dpap_deploy.data.SOURCES               digits, wine, breast-cancer, iris, event-digits, npz, nmnist, tonic
    dpap_deploy.data.encoding.ENCODINGS    rate, current (static features into an SNN)
    dpap_deploy.train.families.FAMILIES    snn-mlp, snn-cnn, snn-2c2f, ann-mlp (or PATH.py:FUNCTION)
    dpap_deploy.train.pruners.PRUNERS      dpap, magnitude, dense
    dpap_deploy.export.TARGETS             loihi-sim, loihi2, netx, nir, onnx
    dpap_deploy.readers.READERS            .net, .nir, .npz network files
    dpap_deploy.foreign.REFERENCES         .net (lava-dl netx), .nir (Norse from_nir): a file's own run

and one intermediate representation (``dpap_deploy.ir``) that every exporter, the emulator and the
mapper read. ``dpap-export`` (``dpap_deploy.cli``) only parses its options and runs the pipeline;
from Python, :func:`deploy` does the same.
"""

__version__ = "0.1.0"


def deploy(model="snn-mlp", data=None, target="loihi-sim", out="runs/latest", **options) -> dict:
    """Train, prune, export, simulate, map and report one network; returns the report.

    See :func:`dpap_deploy.pipeline.deploy` for the arguments.
    """
    from dpap_deploy.pipeline import deploy as _deploy

    return _deploy(model=model, data=data, target=target, out=out, **options)
