"""dpap-deploy: DPAP-pruned spiking networks from Norse to Lava and Loihi budgets.

Pipeline (one way, one home per stage)::

    dpap_deploy.data          digits / user .npz -> spike trains (T, B, C)
    dpap_deploy.train         Norse SNN, DPAP pruning during training, compaction
    dpap_deploy.ir            the one intermediate representation (numpy only)
    dpap_deploy.export        quantisation + targets registered by name (loihi-sim, ...)
    dpap_deploy.mapping       neuro-core mapping against a hardware profile
    dpap_deploy.report        report.json
    dpap_deploy.cli           ``dpap-export`` glue
"""

__version__ = "0.1.0"
