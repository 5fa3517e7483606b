"""Plots written next to every run's metrics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: runs write PNGs, notebooks display them; experiments take plt from here
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_learning_curve(records, path: str, title: str, key: str = "episode_return") -> None:
    """Per-seed curves (thin) and their mean (thick) of ``key/per_seed`` against env steps,
    with evaluation returns as points where ``eval_return/per_seed`` was logged."""
    steps = np.array([r["env_steps"] for r in records])
    per_seed = np.array([r[f"{key}/per_seed"] for r in records], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, per_seed, color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(steps, per_seed.mean(axis=1), color="tab:blue", linewidth=2, label=f"training {key} (mean)")
    evals = [r for r in records if "eval_return/per_seed" in r]
    if evals:
        x = np.array([r["env_steps"] for r in evals])
        y = np.array([r["eval_return/per_seed"] for r in evals], dtype=float)
        ax.errorbar(x, y.mean(axis=1), yerr=y.std(axis=1), fmt="o", color="tab:orange", label="evaluation (mean ± sd)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_metrics(records, keys, path: str, title: str) -> None:
    """One panel per metric in ``keys`` (mean over seeds) against the update number."""
    keys = [k for k in keys if any(k in r for r in records)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [r for r in records if key in r]
        ax.plot([r["update"] for r in rows], [np.mean(r[key]) for r in rows], color="tab:blue")
        ax.set_xlabel("update")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def seed_band(ax, x, per_seed, label: str, color: str, marker: str = "o") -> None:
    """The mean over seeds as a line and the seeds' min..max as a band; ``per_seed`` is ``[seeds, points]``."""
    y = np.asarray(per_seed, dtype=float)
    ax.plot(x, y.mean(axis=0), "-" + marker, markersize=3, color=color, label=label)
    ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=color, alpha=0.15)


def save_figure(fig, path: str) -> None:
    """Lay out, write ``path`` at 120 dpi and release the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
