"""Figures of the apps' runs: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

import io
import os

from lstmkit.utils.checkpoint import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use: the
    apps' other commands do not pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """`fig` as a PNG at `path`, then closed. Rendered in memory first, so a failing render or a
    crash leaves the previous file whole, never half a new one."""
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    atomic_write_bytes(path, png.getvalue())
