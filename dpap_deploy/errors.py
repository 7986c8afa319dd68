"""Typed errors of dpap-deploy, all in one place.

Every error message names the file, layer or field at fault and the limit it
broke, so the CLI can print it as it is (no traceback unless ``--debug``).
"""


class DpapError(Exception):
    """Base class of every error dpap-deploy raises on purpose."""


class DataError(DpapError):
    """A data set (bundled or a user's ``.npz``) cannot be used."""


class ProfileError(DpapError):
    """A hardware profile is unknown, malformed or has an invalid field."""


class UnknownNameError(DpapError):
    """A name (data source, model family, pruner, target, reader) is not registered; the message
    lists the known names."""


class UnknownTargetError(UnknownNameError):
    """An export target name is not registered."""


class ModelError(DpapError):
    """A network cannot be built or trained as given: a chain of layers in the wrong order or of
    the wrong shape, a user's model file that cannot be loaded, a saved model configuration that
    is not ours (the message names the file, layer or field)."""


class UnsupportedLayerError(DpapError):
    """An IR layer kind is not supported by an exporter or the mapper."""


class QuantizationError(DpapError):
    """A layer cannot be represented in the target's fixed-point ranges."""


class IRError(DpapError):
    """An intermediate representation is inconsistent or a saved one is unreadable."""


class NetworkFileError(IRError):
    """A network file (netx ``.net``, NIR ``.nir``, a run folder) is not ours, truncated or
    inconsistent; the message names the file and the group, node or key at fault."""


class OutputError(DpapError):
    """An output folder cannot be created or written (names the folder and the reason)."""


class ExportValidationError(DpapError):
    """An exported network does not behave as the toolchain says it will."""


class MappingError(DpapError):
    """A layer cannot be placed on a neuro core of the profile at all."""


class BudgetError(DpapError):
    """A hardware budget cannot be met by any pruning of the network (names the binding limit)."""


class ConfigError(DpapError):
    """A ``--config`` file is unreadable, malformed, or has an unknown key or a wrong-typed value."""


class CheckpointError(DpapError):
    """A checkpoint or run folder to resume is missing, corrupt, or not written by dpap-deploy."""


class TrainingInterrupted(DpapError):
    """Training stopped on SIGINT (Ctrl-C) after writing a checkpoint it can resume from.

    Attributes:
        path: the checkpoint written.
        epoch, batch: where training will continue (0-based).
    """

    def __init__(self, path: str, epoch: int, batch: int):
        super().__init__(f"interrupted at epoch {epoch} batch {batch}; checkpoint saved to {path}")
        self.path, self.epoch, self.batch = path, epoch, batch
