"""The sweep figures: FID vs IS (Ho & Salimans 2021, Fig. 4 style) and metrics vs guidance weight."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fid_vs_is(series: dict[str, list[dict]], path: Path, key: str = "w", tag: str = "FMNIST") -> None:
    """One curve per series through (IS, FID) points, each point labelled with its weight."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for name, rows in series.items():
        rows = sorted(rows, key=lambda r: r[key])
        ax.plot([r["is"] for r in rows], [r["fid"] for r in rows], "o-", label=name)
        for r in rows:
            ax.annotate(f"{r[key]:g}", (r["is"], r["fid"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"IS-{tag} (higher = more class-distinct)")
    ax.set_ylabel(f"FID-{tag} (lower = closer to data)")
    ax.set_title(f"FID vs IS over the guidance weight {key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def metrics_vs_w(rows: list[dict], path: Path, key: str = "w", tag: str = "FMNIST") -> None:
    """FID, IS, accuracy and precision/recall against the weight, in three panels."""
    rows = sorted(rows, key=lambda r: r[key])
    ws = [r[key] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=120, sharex=True)
    axes[0].plot(ws, [r["fid"] for r in rows], "o-", color="C3")
    axes[0].set_ylabel(f"FID-{tag}")
    axes[1].plot(ws, [r["is"] for r in rows], "o-", color="C0", label=f"IS-{tag}")
    axes[1].set_ylabel(f"IS-{tag}")
    for name, color in (("accuracy", "C2"), ("precision", "C1"), ("recall", "C4")):
        vals = [r.get(name) for r in rows]
        if any(v is not None for v in vals):
            axes[2].plot(ws, vals, "o-", color=color, label=name)
    axes[2].set_ylim(0, 1.02)
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    positive = [w for w in ws if w > 0]
    span = max(ws) - min(ws) or 1.0
    if min(ws) >= 0 and positive and max(ws) > 10 * min(positive):
        axes[0].set_xscale("symlog", linthresh=0.1)
        axes[0].set_xlim(min(ws) - 0.02, max(ws) * 1.3)
    else:
        axes[0].set_xlim(min(ws) - 0.05 * span, max(ws) + 0.05 * span)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def adherence_and_fid(rows: list[dict], path: Path, key: str, metric: str, higher_is_better: bool = True,
                      tag: str = "FMNIST", title: str = "") -> None:
    """ControlNet adherence (Zhang et al. 2023) and FID against `key` (control scale or training step), two panels."""
    rows = sorted(rows, key=lambda r: r[key])
    xs = [r[key] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, sharex=True)
    axes[0].plot(xs, [r.get(metric) for r in rows], "o-", color="C0")
    axes[0].set_ylabel(f"{metric} ({'higher' if higher_is_better else 'lower'} = closer to the hint)")
    axes[1].plot(xs, [r.get("fid") for r in rows], "o-", color="C3")
    axes[1].set_ylabel(f"FID-{tag} (lower = closer to data)")
    for ax in axes:
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
