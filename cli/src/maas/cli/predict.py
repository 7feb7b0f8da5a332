"""`maas predict MODEL[@alias|/version] --input FILE` (or `--text "..."` for a text model): classify
through the Open Inference Protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maas.cli import inputs, refs
from maas.cli.context import Context
from maas.cli.output import print_json, to_dict
from maas.common import errors

if TYPE_CHECKING:  # maas.client.inference registers the OIP protos, which tritonclient's tests register too
    from maas.client.inference import TensorInfo


def target(ctx: Context, ref: str) -> tuple[str, str]:
    """(model, protocol version): "" means what the server serves for the model."""
    parsed = refs.parse(ref)
    if parsed.version:
        return parsed.model, str(parsed.version)
    if "@" in ref:
        return parsed.model, str(ctx.registry.resolve(ref).version)
    return parsed.model, ""


def labels_of(ctx: Context, model: str, version: str) -> list[str]:
    """The version's class labels from the registry ([] when it has none or cannot be asked)."""
    if not version.isdigit():
        return []
    try:
        record = ctx.registry.get_version(model, int(version))
    except errors.MaasError as exc:
        print(f"maas: warning: no labels ({exc.message})", file=sys.stderr)
        return []
    arch = to_dict(record).get("architecture") or {}
    return [str(x) for x in arch.get("labels") or []]


def run(args: argparse.Namespace, ctx: Context) -> int:
    model, version = target(ctx, args.ref)
    client = ctx.inference
    try:
        info = client.model_metadata(model, version)
    except errors.NotFound as exc:
        raise errors.NotFound(f"{exc.message} (serve it with `maas serving load {args.ref}`)") from None
    if len(info.inputs) != 1:
        raise errors.InvalidArgument(f"model '{model}' takes {len(info.inputs)} inputs; maas predict feeds one")
    spec = info.inputs[0]
    array = _texts(args, model, spec) if args.text else _loaded(args, ctx, model, version, spec)
    result = client.infer_array(model, array, version)
    name = args.output or next(iter(result.outputs))
    if name not in result.outputs:
        raise errors.InvalidArgument(f"output '{name}' not in the answer ({', '.join(result.outputs)})")
    output = result.outputs[name]
    labels = [] if args.raw else labels_of(ctx, model, result.version)
    ranked = None
    if labels and output.ndim == 2 and output.shape[1] == len(labels):
        ranked = inputs.top_k(output, labels, max(1, min(args.top_k, len(labels))))
    if ctx.json:
        print_json(
            {
                "model": result.model,
                "version": result.version,
                "outputs": {n: _tensor(a) for n, a in result.outputs.items()},
                "predictions": ranked,
            }
        )
        return 0
    print(f"{result.model}/{result.version}: {name} {list(output.shape)}")
    if ranked is None:
        print(np.array2string(output, precision=4, suppress_small=True, max_line_width=120))
        return 0
    for row, best in enumerate(ranked):
        text = "   ".join(f"{b['label']} ({100 * b['probability']:.1f}%)" for b in best)
        print(f"[{row}] {text}")
    return 0


def _texts(args: argparse.Namespace, model: str, spec: TensorInfo) -> np.ndarray:
    """The strings, one row each, for a text model (one BYTES input)."""
    if spec.datatype != "BYTES":
        raise errors.InvalidArgument(
            f"model '{model}' takes {spec.datatype} input '{spec.name}' {list(spec.shape)}, not text; give --input FILE"
        )
    return np.array(args.text, dtype=object)


def _loaded(args: argparse.Namespace, ctx: Context, model: str, version: str, spec: TensorInfo) -> np.ndarray:
    if spec.datatype == "BYTES":
        raise errors.InvalidArgument(f"model '{model}' takes text (input '{spec.name}', strings): give --text")
    return inputs.load(
        Path(args.input), spec.shape, pixel_max=_pixel_max(ctx, args, model, version), invert=args.invert
    )


def _pixel_max(ctx: Context, args: argparse.Namespace, model: str, version: str) -> float:
    if args.pixel_max is not None:
        return float(args.pixel_max)
    # The digits set stores 8x8 pixels as 0..16, and its models expect that range.
    if Path(args.input).suffix.lower() in inputs.IMAGE_SUFFIXES and version.isdigit():
        try:
            record = ctx.registry.get_version(model, int(version))
            run = ctx.registry.get_run(record.run_id) if record.run_id else None
        except errors.MaasError:
            return 255.0
        if run is not None and run.params.get("dataset.name") == "digits":
            return 16.0
    return 255.0


def _tensor(array: np.ndarray) -> dict[str, Any]:
    data = array.tolist() if array.dtype != object else [str(x) for x in array.ravel()]
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": data}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="run a served model on an input file",
        description="Send an input (a file, or strings for a text model) through the inference service "
        "(Open Inference Protocol) and print the top-k "
        "classes (labels from the registry) or the output tensor. MODEL uses the version the server serves; "
        "MODEL@ALIAS resolves the alias in the registry; MODEL/VERSION asks for that version.",
    )
    p.add_argument("ref", metavar="MODEL[@ALIAS|/VERSION]")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("-i", "--input", metavar="FILE", help=".npy, .json, or an image (png, jpg, ...)")
    given.add_argument(
        "-t",
        "--text",
        action="extend",
        nargs="+",
        metavar="TEXT",
        help="text models: the strings to classify, one row each (several, or --text again)",
    )
    p.add_argument("-k", "--top-k", type=int, default=3, help="classes to show per row (default 3)")
    p.add_argument("--output", metavar="NAME", help="which output to show (default: the first)")
    p.add_argument("--raw", action="store_true", help="print the output tensor, not classes")
    p.add_argument("--pixel-max", type=float, help="images: scale pixels to 0..this (default 255; 16 for digits)")
    p.add_argument("--invert", action="store_true", help="images: invert (dark strokes on a light background)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
