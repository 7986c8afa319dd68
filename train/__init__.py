"""Training side of dpap-deploy (installed as ``dpap_deploy.train``).

``models``   Norse spiking MLP with per-synapse masks (time first, ``(T, B, F)``).
``dpap``     DPAP state and rules (spiking trace, BCM, spine value, survival ``R``).
``compact``  masks -> physically smaller layers, and the model -> IR conversion.
``loop``     the training loop with DPAP inside.
``distributed`` data-parallel training under torchrun (DDP; DPAP statistics summed over ranks).
"""
