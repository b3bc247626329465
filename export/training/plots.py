"""Training curves as one PNG: losses on the left, validation ranking metrics and the logit gap on the right."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in ("loss", "bce", "pair", "patch", "val_loss"):
        left.plot(epochs, [row[key] for row in history], label=key)
    left.set(xlabel="epoch", title="losses (train; val_loss on validation)")
    left.legend()
    for key in ("auroc", "ap"):
        right.plot(epochs, [row[key] for row in history], label=key)
    right.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    gap_axis = right.twinx()
    gap_axis.plot(epochs, [row["gap"] for row in history], "k--", label="gap (logit)")
    gap_axis.set_ylabel("mean pos - mean neg logit")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
