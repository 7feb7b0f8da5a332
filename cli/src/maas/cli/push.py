"""`maas push MODEL FILE`: a model file built anywhere becomes a new version.

    maas push my-net net.onnx --labels labels.txt --promote production
    maas push my-net weights.safetensors --architecture resnet18 --arg num_classes=10 \\
        --input-shape 3,224,224 --normalize 0.485,0.456,0.406:0.229,0.224,0.225
    maas push reviews bert.onnx --tokenizer tokenizer.json --max-length 128 --labels labels.txt

The format comes from the content (`maas.client.push`); the upload shows a bar on
a terminal (stderr, so `--json` output stays clean).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from maas.cli.context import Context
from maas.cli.output import print_json, to_dict
from maas.cli.progress import bar, duration
from maas.cli.refs import format_name, status_name
from maas.common.errors import InvalidArgument
from maas.common.names import MAX_VALUE_CHARS

REDRAW_SECONDS = 0.1


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidArgument(f"{flag}: expected numbers separated by commas, got '{text[:60]}'") from None


def normalize_of(text: str) -> dict[str, list[float]]:
    """'MEAN,STD' (one value each) or 'M1,M2,M3:S1,S2,S3' (one per channel)."""
    if ":" in text:
        mean_text, _, std_text = text.partition(":")
        mean, std = _numbers(mean_text, "--normalize"), _numbers(std_text, "--normalize")
    else:
        values = _numbers(text, "--normalize")
        if len(values) != 2:
            raise InvalidArgument(
                f"--normalize: MEAN,STD (one value each) or M1,M2,M3:S1,S2,S3 (one per channel), got '{text[:60]}'"
            )
        mean, std = values[:1], values[1:]
    if len(mean) != len(std):
        raise InvalidArgument(f"--normalize: {len(mean)} means and {len(std)} standard deviations")
    if any(s <= 0 for s in std):
        raise InvalidArgument("--normalize: standard deviations must be positive")
    return {"mean": mean, "std": std}


def _arg_values(items: list[str] | None) -> dict[str, Any]:
    """KEY=VALUE pairs, each value read as JSON where it parses (10, 0.5, [64,32], true), else a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--arg: expected KEY=VALUE, got '{item[:60]}'")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _tags(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--tag: expected KEY=VALUE, got '{item[:60]}'")
        out[key] = value
    return out


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidArgument(f"{flag}: cannot read '{path}': {reason}") from None


def labels_of(path: str) -> list[str]:
    """One label per line; blank lines are skipped."""
    return [line.strip() for line in _read_text(path, "--labels").splitlines() if line.strip()]


def architecture_of(args: argparse.Namespace) -> dict[str, Any]:
    """What the flags say of the architecture (the client checks it against the format)."""
    doc: dict[str, Any] = {}
    if args.architecture_file:
        try:
            doc = json.loads(_read_text(args.architecture_file, "--architecture-file"))
        except ValueError as exc:
            raise InvalidArgument(f"--architecture-file: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidArgument("--architecture-file: must hold a JSON object")
    if args.architecture:
        doc["name"] = args.architecture
    if args.arg:
        doc["args"] = {**doc.get("args", {}), **_arg_values(args.arg)}
    if args.input_shape:
        try:
            doc["input_shape"] = [int(d) for d in args.input_shape.split(",")]
        except ValueError:
            raise InvalidArgument(f"--input-shape: expected C,H,W (integers), got '{args.input_shape[:60]}'") from None
    if args.labels:
        doc["labels"] = labels_of(args.labels)
    if args.normalize:
        doc["normalize"] = normalize_of(args.normalize)
    return doc


def _human(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


class UploadBar:
    """`uploading FILE [████░░░░] 42%  18.4/44.0 MiB  25.3 MiB/s  ETA 0:01`, redrawn on a terminal."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.unicode = "utf" in (getattr(self.stream, "encoding", None) or "").lower()
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def __call__(self, sent: int, total: int) -> None:
        now = time.monotonic()
        if not self.live or (now - self._last < REDRAW_SECONDS and sent < total):
            return
        self._last = now
        elapsed = max(now - self._start, 1e-6)
        rate = sent / elapsed
        eta = (total - sent) / rate if rate > 0 else 0.0
        fraction = sent / total if total else 1.0
        line = (
            f"uploading {self.name} [{bar(fraction, 30, self.unicode)}] {100 * fraction:3.0f}%  "
            f"{_human(sent)}/{_human(total)}  {_human(rate)}/s  ETA {duration(eta)}"
        )
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def push(args: argparse.Namespace, ctx: Context) -> int:
    if args.description and len(args.description) > MAX_VALUE_CHARS:
        raise InvalidArgument(f"--description: at most {MAX_VALUE_CHARS} characters")
    doc = architecture_of(args)
    bar_view = UploadBar(Path(args.file).name)
    try:
        version = ctx.registry.push(
            args.model,
            args.file,
            architecture=doc,
            description=args.description or "",
            tags=_tags(args.tag),
            run_id=args.run or "",
            promote=args.promote,
            progress=bar_view,
            tokenizer=args.tokenizer,
            max_length=args.max_length,
        )
    finally:
        bar_view.close()
    if ctx.json:
        print_json(to_dict(version))
        return 0
    promoted = f"  @{args.promote} -> {version.version}" if args.promote else ""
    print(
        f"{version.model}/{version.version} {status_name(version.status)}  {format_name(version.format)}  "
        f"{_human(version.size_bytes)}  sha256 {version.sha256[:12]}{promoted}"
    )
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser(
        "push",
        parents=[common],
        help="register a model file (ONNX, or safetensors with its architecture) as a new version",
        description="Register FILE as a new version of MODEL (created if it does not exist). The format is "
        "read from the content: ONNX, or safetensors holding the network's state_dict, which needs a catalog "
        "architecture (--architecture NAME --arg KEY=VALUE --input-shape C,H,W, or --architecture-file). "
        "An ONNX text classifier comes with --tokenizer and --max-length. "
        "A file the registry refuses leaves the version FAILED with the reason.",
    )
    c.add_argument("model", metavar="MODEL")
    c.add_argument("file", metavar="FILE")
    arch = c.add_argument_group("safetensors architecture")
    arch.add_argument("--architecture", metavar="NAME", help="catalog entry: lenet, mlp, resnet18, ...")
    arch.add_argument(
        "--arg",
        action="append",
        metavar="KEY=VALUE",
        help="an argument of the architecture; values are read as JSON where they parse "
        "(--arg num_classes=10 --arg hidden=[64,32])",
    )
    arch.add_argument("--architecture-file", metavar="JSON", help="the whole architecture document")
    arch.add_argument("--input-shape", metavar="C,H,W", help="one input row without the batch, e.g. 3,224,224")
    arch.add_argument(
        "--normalize",
        metavar="MEAN,STD",
        help="input normalization (x - mean) / std applied by the service: MEAN,STD, "
        "or one value per channel as M1,M2,M3:S1,S2,S3",
    )
    text = c.add_argument_group("ONNX text classifier (the service then takes strings)")
    text.add_argument(
        "--tokenizer",
        metavar="FILE",
        help="the tokenizer.json (tokenizers library) the graph's input_ids come from; the graph takes "
        "input_ids and attention_mask (int64 [batch, sequence]) and returns logits",
    )
    text.add_argument(
        "--max-length", type=int, metavar="N", help="tokens per text, special tokens included (longer texts are cut)"
    )
    c.add_argument("--labels", metavar="FILE", help="class labels, one per line (ONNX too)")
    c.add_argument("--description")
    c.add_argument("--tag", action="append", metavar="KEY=VALUE")
    c.add_argument("--run", metavar="RUN_ID", help="the registry run the model came from")
    c.add_argument("--promote", metavar="ALIAS", help="point ALIAS (production, ...) at the version once READY")
    c.add_argument("--json", action="store_true", help="print the version as `maas versions show --json` does")
    c.set_defaults(func=push)
