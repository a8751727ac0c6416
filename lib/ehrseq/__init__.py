"""ehrseq: the companion library of the EHR sequence-models book.

Data flows one way: tables -> events -> sequences -> tensors -> model -> hazards -> metrics.
Lower layers never import higher ones.
"""

from ehrseq.runtime import (
    autocast,
    describe_environment,
    get_device,
    measure,
    saved_for_backward_mib,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = [
    "autocast",
    "describe_environment",
    "get_device",
    "measure",
    "saved_for_backward_mib",
    "seed_everything",
    "__version__",
]
