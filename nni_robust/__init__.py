"""nni_robust: search for adversarially robust neural architectures on top of NNI.

The core package holds what every method shares: data, attacks, adversarial
training, BN calibration, FLOPs counting, rewards, checkpoints and logging.
Search spaces live in :mod:`nni_robust.spaces`, exploration strategies and
evaluators in :mod:`nni_robust.strategies`, and the code NNI runs per trial in
:mod:`nni_robust.trial`.
"""

from .errors import (ArchitectureError, CheckpointError, ConfigError, DatasetNotFoundError,
                     NniRobustError)

__version__ = "0.1.0"

__all__ = ["ArchitectureError", "CheckpointError", "ConfigError", "DatasetNotFoundError",
           "NniRobustError", "__version__"]
