"""The report's plots as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only: never a window, whatever the machine has

import matplotlib.pyplot as plt  # noqa: E402


def _png(fig, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def _nothing(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this version", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def bar_plot(counts: dict[str, int], title: str, xlabel: str, dpi: int = 100) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if counts:
        ax.bar(list(counts), list(counts.values()), color="#4c72b0")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("identities")
        ax.tick_params(axis="x", labelrotation=45)
    else:
        _nothing(ax, "identities")
    ax.set_title(title)
    return _png(fig, dpi)


def histogram_plot(figure: dict, title: str, xlabel: str, log: bool = False, dpi: int = 100) -> bytes:
    """A histogram of `figures.histogram` with its threshold as a red line."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if figure["counts"]:
        edges = figure["edges"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        ax.bar(edges[:-1], figure["counts"], width=widths, align="edge", color="#4c72b0", edgecolor="white")
        ax.axvline(figure["threshold"], color="#c44e52", linestyle="--", label=f"threshold {figure['threshold']:g}")
        ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("faces")
        if log:
            ax.set_xscale("log")
    else:
        _nothing(ax, "faces")
    ax.set_title(title)
    return _png(fig, dpi)


def samples_plot(samples: dict, dpi: int = 100) -> bytes:
    """Identities by how many samples they have: verified faces and pre-labelled faces."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    shown = False
    for column, color in (("prelabelled", "#8da0cb"), ("verified", "#55a868")):
        counts = {int(n): c for n, c in samples[column].items() if int(n) > 0}
        if counts:
            ax.bar(list(counts), list(counts.values()), color=color, alpha=0.8, label=f"{column} faces")
            shown = True
    if shown:
        ax.set_xlabel("samples per identity")
        ax.set_ylabel("identities")
        ax.legend()
    else:
        _nothing(ax, "identity with samples")
    ax.set_title("Samples per identity")
    return _png(fig, dpi)


def report_plots(figures: dict, dpi: int = 100) -> dict[str, bytes]:
    """Every plot of the report, by file name."""
    return {
        "regions.png": bar_plot(figures["regions"], "Identities per region", "region", dpi),
        "resolution.png": histogram_plot(
            figures["resolution"], "Face resolution (shorter crop side)", "pixels", dpi=dpi
        ),
        "sharpness.png": histogram_plot(
            figures["sharpness"], "Sharpness (variance of Laplacian)", "sharpness", log=True, dpi=dpi
        ),
        "samples_per_identity.png": samples_plot(figures["samples_per_identity"], dpi),
    }
