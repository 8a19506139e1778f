"""mdctr: multi-domain click-through-rate prediction."""

from mdctr.config import Experiment, load_experiment
from mdctr.errors import InputError

__version__ = "0.4.0"

__all__ = ["Experiment", "InputError", "__version__", "load_experiment"]
