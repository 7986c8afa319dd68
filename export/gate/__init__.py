"""Lava processes of our own, in their own folder: Lava looks for a process's models in the
modules next to it, and would try (and warn about) every exporter module otherwise."""
from dpap_deploy.export.gate.bias_lif import (BiasScheduleLIF, PyBiasScheduleLifModelBitAcc,
                                               PyBiasScheduleLifModelFloat)
from dpap_deploy.export.gate.file_sink import (MAX_PORTS, FileSink, FileSinks, PyFileSinkModel,
                                                PyFileSinksModel, Recording)
from dpap_deploy.export.gate.gated_lif import (GatedBiasScheduleLIF, GatedLIFReset, PyGatedBiasScheduleLifModelBitAcc,
                                                PyGatedBiasScheduleLifModelFloat, PyGatedLifResetModelBitAcc,
                                                PyGatedLifResetModelFloat)
from dpap_deploy.export.gate.spike_gate import PySpikeGateModel, SpikeGate

__all__ = ["MAX_PORTS", "FileSink", "PyFileSinkModel", "FileSinks", "PyFileSinksModel", "Recording", "SpikeGate",
           "PySpikeGateModel", "BiasScheduleLIF", "PyBiasScheduleLifModelBitAcc", "PyBiasScheduleLifModelFloat",
           "GatedLIFReset", "PyGatedLifResetModelBitAcc", "PyGatedLifResetModelFloat", "GatedBiasScheduleLIF",
           "PyGatedBiasScheduleLifModelBitAcc", "PyGatedBiasScheduleLifModelFloat"]
