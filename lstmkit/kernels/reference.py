"""`backend="reference"`: the reference cells looped in Python (autograd does the backward)."""

from lstmkit.cells import CELLS
from lstmkit.cells.sequence import reference_layer as layer

CELLS = tuple(CELLS)
DEVICES = ("cpu", "cuda")

__all__ = ["CELLS", "DEVICES", "layer"]
