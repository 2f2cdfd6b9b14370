"""The one error type for mistakes a user can make (config, dataset, site file, CLI flag).

The CLI catches :class:`HpcclError` and prints its message as one paragraph without a
traceback; anything else is a bug and keeps its traceback.
"""


class HpcclError(Exception):
    """A problem with the user's input, worded so that they can fix it.

    Messages name the file, the key and what was expected, and may end with a hint.
    """


class ConfigError(HpcclError):
    """A job file, site file or ``--set`` override is invalid."""


class DatasetError(HpcclError):
    """A dataset file is missing or does not follow the hpccl HDF5 schema."""


class CollectiveError(HpcclError):
    """A failure every rank detects at the same point (after a collective that told them all):
    rank 0 reports it, and every rank exits with ``exit_code`` without aborting MPI."""
    exit_code = 3
    status = "failed"


class TrainingDiverged(CollectiveError):
    """The training loss (or the parameters) stopped being finite."""
    status = "failed: non-finite loss"


class PeerLost(HpcclError):
    """A transport beside MPI (torch.distributed's gloo or NCCL) lost its connection to another
    rank: that rank or its node failed. Not this rank's bug: one paragraph, then the job ends."""


class CorruptFileError(HpcclError):
    """A file hpccl wrote itself (a checkpoint, a log, a sweep manifest) cannot be read or does
    not hold what hpccl writes: truncated, overwritten, or edited by hand. The message names
    the file and what is wrong with it; nothing has been changed on disk."""
