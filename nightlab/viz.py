"""Figures: sample grids, bar plots and qualitative panels.

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot): they render without a GUI
backend and hold no global state, so importing this module changes nothing.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nightlab.io import atomic_path, write_image
from nightlab.labels import CLASS_NAMES, IGNORE, colorize


def new_figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def save_fig(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    col = colorize(train_ids).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + col * alpha
    out[train_ids == IGNORE] = image[train_ids == IGNORE]
    return out.clip(0, 255).astype(np.uint8)


FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_size(height: int) -> tuple[int, float, int]:
    """Row height (px), font scale and stroke for text on an image ``height`` pixels high."""
    row = int(np.clip(height // 28, 14, 40))
    return row, row / 36, max(1, row // 20)


def draw_boxes(image: np.ndarray, boxes, colour=(255, 255, 0), thickness: int = 1, labels=None) -> np.ndarray:
    """``boxes`` (x0, y0, x1, y1) drawn on a copy of ``image``; ``labels``: one text per box (e.g. its
    score), written on a dark patch at the box's top-left corner, inside the image."""
    out = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    _, scale, stroke = _text_size(out.shape[0])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), colour, thickness)
        if labels is None or i >= len(labels):
            continue
        (tw, th), base = cv2.getTextSize(str(labels[i]), FONT, scale, stroke)
        x = int(np.clip(x0, 0, max(out.shape[1] - tw - 2, 0)))
        y = int(np.clip(y0 - th - base - 2, 0, max(out.shape[0] - th - base - 2, 0)))  # above the box if room
        cv2.rectangle(out, (x, y), (x + tw + 2, y + th + base + 2), (0, 0, 0), -1)
        cv2.putText(out, str(labels[i]), (x + 1, y + th + 1), FONT, scale, colour, stroke, cv2.LINE_AA)
    return out


def legend_entries(train_ids: np.ndarray) -> list[tuple[int, float]]:
    """The classes present in a label map with their share of its labelled pixels, largest first."""
    counts = np.bincount(train_ids.ravel(), minlength=256)[: len(CLASS_NAMES)]
    total = max(int(counts.sum()), 1)
    return [(int(c), counts[c] / total) for c in np.argsort(-counts, kind="stable") if counts[c]]


def with_legend(image: np.ndarray, train_ids: np.ndarray, regions: int | None = None) -> np.ndarray:
    """``image`` (RGB, unchanged, at the top-left) with a legend panel at its right: a swatch of each
    class's Cityscapes colour, its name and its share of the pixels, for the classes ``train_ids``
    holds (largest first); with ``regions``, a last line saying how many regions are drawn and that
    their number is the detector's score. The panel grows the canvas below the image when it is
    taller (filled dark)."""
    from nightlab.labels import PALETTE

    h, w = image.shape[:2]
    row, scale, stroke = _text_size(max(h, 240))
    lines = [(c, f"{CLASS_NAMES[c]} {100 * share:.1f}%" if share >= 0.0005 else f"{CLASS_NAMES[c]} <0.1%")
             for c, share in legend_entries(train_ids)]
    if regions is not None:
        lines.append((None, f"{regions} region{'s' if regions != 1 else ''} (number: detector score)"))
    width = max((cv2.getTextSize(t, FONT, scale, stroke)[0][0] for _, t in lines), default=0) + row + 12
    height = max(h, row * (len(lines) + 1))
    out = np.full((height, w + width, 3), 32, np.uint8)
    out[:h, :w] = image
    for i, (c, text) in enumerate(lines):
        y = row // 2 + i * row
        x = w + 6
        if c is not None:
            cv2.rectangle(out, (x, y + 2), (x + row - 4, y + row - 2), tuple(int(v) for v in PALETTE[c]), -1)
        cv2.putText(out, text, (x + row, y + row - 4), FONT, scale, (235, 235, 235), stroke, cv2.LINE_AA)
    return out


def tile(rows: list[list[np.ndarray]], height: int = 128) -> np.ndarray:
    """Resize every panel to a common height and tile them row by row."""
    def fit(a):
        a = a if a.ndim == 3 else colorize(a)
        w = int(round(a.shape[1] * height / a.shape[0]))
        return cv2.resize(a, (w, height), interpolation=cv2.INTER_NEAREST)
    lines = [np.concatenate([fit(a) for a in r], 1) for r in rows]
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines]
    return np.concatenate(lines, 0)


def save_grid(path: str | Path, rows: list[list[np.ndarray]], height: int = 128) -> None:
    write_image(path, tile(rows, height))


def plot_class_frequency(freq: pd.DataFrame, path: str | Path) -> None:
    fig, ax = new_figure(11, 4)
    groups = list(freq.groupby(["split", "domain"]))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(CLASS_NAMES))
    for i, ((split, domain), g) in enumerate(groups):
        ax.bar(x + i * width, g.sort_values("class_id").frequency, width, label=f"{split}/{domain}")
    ax.set_yscale("log")
    ax.set_xticks(x + 0.4 - width / 2, CLASS_NAMES, rotation=60, ha="right")
    ax.set_ylabel("pixel frequency")
    ax.set_title("Class pixel frequency per split and domain")
    ax.legend()
    save_fig(fig, path)


def plot_grouped_iou(table: pd.DataFrame, columns: list[str], path: str | Path, title: str,
                     highlight: list[str] | None = None) -> None:
    """Grouped bars of per-class IoU; ``table`` has a class_name column and one column per variant."""
    fig, ax = new_figure(12, 4)
    x = np.arange(len(table))
    width = 0.8 / len(columns)
    for i, c in enumerate(columns):
        ax.bar(x + i * width, table[c].fillna(0) * 100, width, label=c)
    ax.set_xticks(x + 0.4 - width / 2, table.class_name, rotation=60, ha="right")
    for lab in ax.get_xticklabels():
        if highlight and lab.get_text() in highlight:
            lab.set_fontweight("bold")
            lab.set_color("crimson")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(ncol=len(columns))
    save_fig(fig, path)


def plot_curve(curve: pd.DataFrame, path: str | Path, title: str, x: str = "iter") -> None:
    """A training curve as a PNG (what ``dvc plots`` shows of it): every ``*loss*`` column against ``x``,
    and the learning rate on a second axis when the curve has one. An empty curve (a model trained
    elsewhere, or nothing to train on) gives a figure that says so."""
    fig, ax = new_figure(7, 3.2)
    losses = [c for c in curve.columns if "loss" in c and c != x]
    data = curve.apply(pd.to_numeric, errors="coerce") if len(curve) else curve
    if not len(data) or not losses:
        ax.text(0.5, 0.5, "no training steps (an external model, or nothing to train on)", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for c in losses:
            ax.plot(data[x], data[c], label=c, lw=1.2)
        ax.set_xlabel(x)
        ax.set_ylabel("loss")
        if "lr" in data.columns and data["lr"].notna().any():
            lr = ax.twinx()
            lr.plot(data[x], data["lr"], color="grey", lw=0.8, ls=":", label="lr")
            lr.set_ylabel("learning rate", color="grey")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title)
    save_fig(fig, path)


def plot_box_sizes(boxes: pd.DataFrame, path: str | Path) -> None:
    """Box plot of sqrt(object area) per class: how small each class is in native pixels."""
    fig, ax = new_figure(11, 4)
    data = [np.sqrt(boxes.area[boxes.class_id == c]) for c in range(len(CLASS_NAMES))]
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, len(CLASS_NAMES) + 1), CLASS_NAMES, rotation=60, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("sqrt(object area) [native px]")
    ax.set_title("Ground-truth object sizes per class")
    save_fig(fig, path)
