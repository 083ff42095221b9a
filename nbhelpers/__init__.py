"""nbhelpers: the helper package behind the TIMA reproduction notebooks."""
from nbhelpers._compat import check_torch_pair

check_torch_pair()

__version__ = "0.1.0"
