"""Model inputs from files: .npy arrays, images, or JSON.

Everything becomes an array of the model's input shape with a batch
dimension in front (added when the file holds a single sample).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maas.common.errors import InvalidArgument

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


def load(path: Path, shape: Sequence[int], *, pixel_max: float = 255.0, invert: bool = False) -> np.ndarray:
    """`shape` is the model's input shape with -1 for dynamic dims (batch first)."""
    if not path.is_file():
        raise InvalidArgument(f"input file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InvalidArgument(f"'{path}' is not a plain .npy array ({exc})") from None
    elif suffix == ".json":
        array = _from_json(path)
    elif suffix in IMAGE_SUFFIXES:
        array = _from_image(path, shape, pixel_max=pixel_max, invert=invert)
    else:
        raise InvalidArgument(f"'{path}': expected a .npy, .json or image file")
    return batched(array, shape)


def _from_json(path: Path) -> np.ndarray:
    try:
        doc: Any = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidArgument(f"'{path}' is not valid JSON ({exc})") from None
    if isinstance(doc, dict):
        if "data" not in doc:
            raise InvalidArgument(f"'{path}': expected a nested list, or an object with 'data' (and 'shape')")
        data = np.asarray(doc["data"])
        if "shape" in doc:
            try:
                data = data.reshape([int(d) for d in doc["shape"]])
            except (ValueError, TypeError):
                raise InvalidArgument(f"'{path}': 'data' does not fit 'shape'") from None
        return data
    try:
        return np.asarray(doc)
    except ValueError:
        raise InvalidArgument(f"'{path}': the nested lists are ragged") from None


def _from_image(path: Path, shape: Sequence[int], *, pixel_max: float, invert: bool) -> np.ndarray:
    """An image as [C, H, W] float32 of the model's size and channels, pixels scaled to 0..pixel_max."""
    dims = list(shape[1:]) if len(shape) == 4 else list(shape)
    if len(dims) != 3 or any(d <= 0 for d in dims) or dims[0] not in (1, 3):
        raise InvalidArgument(f"an image needs a model input of shape [-1, 1 or 3, H, W], not {list(shape)}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InvalidArgument("reading images needs pillow (pip install 'maas[images]')") from None
    channels, height, width = dims
    try:
        with Image.open(path) as img:
            converted = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidArgument(f"'{path}' is not a readable image ({exc})") from None
    if invert:
        pixels = 255.0 - pixels
    pixels = pixels * (pixel_max / 255.0)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def batched(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Add the batch dimension when missing; check the fixed dimensions."""
    if shape and array.ndim == len(shape) - 1:
        array = array[None]
    if shape and array.ndim != len(shape):
        raise InvalidArgument(f"input has shape {list(array.shape)}; the model takes {list(shape)}")
    for got, want in zip(array.shape, shape, strict=True):
        if want >= 0 and got != want:
            raise InvalidArgument(f"input has shape {list(array.shape)}; the model takes {list(shape)}")
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(scores: np.ndarray, labels: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """Per row, the k most likely classes with their label and probability."""
    probs = softmax(scores.astype(np.float64))
    out = []
    for row in probs:
        best = np.argsort(-row, kind="stable")[:k]
        out.append([{"index": int(i), "label": str(labels[i]), "probability": float(row[i])} for i in best])
    return out
