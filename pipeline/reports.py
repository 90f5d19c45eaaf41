"""Stage reports: ``metrics.json`` and ``report.md`` with matplotlib figures."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402


def write_metrics(stage_dir: Path, metrics: dict) -> Path:
    path = Path(stage_dir) / "metrics.json"
    atomic_write_json(path, metrics)
    return path


def save_figure(fig, path: Path) -> Path:
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def contact_sheet_figure(images: Sequence[np.ndarray], titles: Sequence[str] | None, path: Path,
                         ncols: int = 8, suptitle: str | None = None) -> Path:
    """Grid of uint8 RGB images (one matplotlib axis each) saved as PNG."""
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save_figure(fig, path)


def write_report(stage_dir: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """``sections`` = [(heading, markdown body), ...]; figures are referenced by relative path."""
    lines = [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body.rstrip(), ""]
    path = Path(stage_dir) / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
