"""`make demo`: the maas story end to end, offline, in about a minute.

1. use the suite at MAAS_*_ADDRESS if it is up, else start one (`maas up`, state in a temp dir);
2. train an MLP on scikit-learn's 8x8 digits through the trainer, with live progress;
3. the trainer registers the version in the model `demo-digits` (`--model` for another) and
   promotes it to `production` when val_accuracy >= 0.9 and no worse than production's;
4. the inference service loads `demo-digits@production` (RepositoryModelLoad);
5. the samples the job held out for validation (never trained on) are classified through the
   Open Inference Protocol, and the accuracy is printed.

Exits non-zero on any failure, or when the accuracy is below the promotion threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from maas.cli.health import check
from maas.cli.progress import ProgressView
from maas.cli.suite import summary_addresses
from maas.cli.watch import job_title
from maas.client import Endpoints, Inference, Registry, Trainer, errors
from maas.client.config import SERVICES

THRESHOLD = 0.9
MODEL = "demo-digits"
T0 = time.monotonic()


def step(text: str) -> None:
    print(
        f"\n\033[1m[{time.monotonic() - T0:5.1f}s] {text}\033[0m"
        if sys.stdout.isatty()
        else f"\n[{time.monotonic() - T0:5.1f}s] {text}",
        flush=True,
    )


def _all_serving(endpoints: Endpoints) -> bool:
    return all(check(endpoints.address(name), timeout=1.0) == "SERVING" for name in SERVICES)


@contextlib.contextmanager
def suite(endpoints: Endpoints) -> Iterator[Endpoints]:
    """The running suite, or a fresh one for the demo's duration."""
    if _all_serving(endpoints):
        print(
            f"using the running suite: registry {endpoints.registry}, trainer {endpoints.trainer}, "
            f"inference {endpoints.inference}"
        )
        yield endpoints
        return
    state = Path(tempfile.mkdtemp(prefix="maas-demo-"))
    env = {
        **os.environ,
        # Port 0: each service binds a free port and `maas up` prints the ones they got.
        "MAAS_REGISTRY_PORT": "0",
        "MAAS_TRAINER_PORT": "0",
        "MAAS_INFERENCE_PORT": "0",
        "MAAS_REGISTRY_METRICS_PORT": "0",
        "MAAS_TRAINER_METRICS_PORT": "0",
        "MAAS_INFERENCE_METRICS_PORT": "0",
        "MAAS_INFERENCE_HTTP_PORT": "0",
        "MAAS_REGISTRY_DATA_DIR": str(state),
        "MAAS_TRAINER_DATA_DIR": str(state),
        "MAAS_INFERENCE_CACHE_DIR": str(state / "inference-cache"),
        "MAAS_TRAINER_POLL_INTERVAL": "0.2",
        "MAAS_TRAINER_DEFAULT_THREADS": "1",
        "MAAS_REGISTRY_GRACE_SECONDS": "2",
        "MAAS_TRAINER_GRACE_SECONDS": "2",
        "MAAS_INFERENCE_GRACE_SECONDS": "2",
    }
    for key in ("MAAS_TRAINER_REGISTRY_ADDRESS", "MAAS_INFERENCE_REGISTRY_ADDRESS"):
        env.pop(key, None)
    log = (state / "suite.log").open("w")
    print(f"no suite at {endpoints.registry}; starting one (`maas up`, state in {state}, log in {log.name})")
    proc = subprocess.Popen(
        [sys.executable, "-m", "maas.cli", "up"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        # `maas up` prints its summary once every service reports SERVING.
        while len(found := summary_addresses(Path(log.name).read_text(errors="replace"))) < len(SERVICES):
            if proc.poll() is not None:
                raise errors.Unavailable(f"`maas up` exited with code {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise errors.Unavailable(f"the suite did not start within 120 s; see {log.name}")
            time.sleep(0.3)
        ours = Endpoints(
            registry=found["registry"],
            trainer=found["trainer"],
            inference=found["inference"],
            timeout=endpoints.timeout,
        )
        print(f"suite up: registry {ours.registry}, trainer {ours.trainer}, inference {ours.inference}")
        yield ours
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def held_out(seed: int, validation_split: float) -> tuple[np.ndarray, np.ndarray]:
    """The digits the job held out for validation: the trainer's own seeded split."""
    from sklearn.datasets import load_digits

    from maas.trainer.datasets import split

    digits = load_digits()
    _, val = split(len(digits.data), validation_split, seed)
    index = val.numpy()
    x = digits.data[index].reshape(-1, 1, 8, 8).astype(np.float32)
    return x, digits.target[index]


def sketch(pixels: np.ndarray) -> list[str]:
    shades = " .:-=+*#%@"
    return ["".join(shades[min(9, int(v * 10 / 17))] * 2 for v in row) for row in pixels.reshape(8, 8)]


def run(args: argparse.Namespace) -> int:
    step("1/5  the suite")
    print(f"the demo's versions go into the model '{args.model}' (--model NAME for another)")
    with suite(Endpoints.from_env()) as ends:
        registry = Registry(ends.channel("registry"))
        trainer = Trainer(ends.channel("trainer"))
        inference = Inference(ends.channel("inference"))

        step(
            f"2/5  train: mlp on digits, {args.epochs} epochs, register in '{args.model}', "
            f"promote to production at val_accuracy >= {THRESHOLD}"
        )
        spec = {
            "model": {"name": "mlp", "args": {"hidden": [128]}},
            "dataset": {"name": "digits"},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "epochs": args.epochs,
            "batch_size": 32,
            "validation_split": args.validation_split,
            "seed": args.seed,
            "register_as": args.model,
            "promotion": {"alias": "production", "metric": "val_accuracy", "threshold": THRESHOLD},
        }
        job = trainer.submit(spec)
        view = ProgressView(job.job_id, job_title(job.spec))
        for event in trainer.follow(job.job_id, on_retry=view.reconnecting):
            view.on_event(event)
        view.close()
        job = trainer.get(job.job_id)
        if job.state != 3:  # SUCCEEDED
            raise errors.FailedPrecondition(f"job {job.job_id} did not succeed: {job.reason}")

        version = registry.get_version(job.registered_model, job.registered_version)
        if version.status != 2:  # READY
            raise errors.FailedPrecondition(f"{version.model}/{version.version} is not READY: {version.status_reason}")
        ref = f"{version.model}/{version.version}"
        try:
            production: int | None = registry.resolve(f"{args.model}@production").version
        except errors.NotFound:
            production = None
        accuracy = version.metrics["val_accuracy"]
        # The step says what the trainer did, known only now: promoted, or why not.
        if job.promoted_alias:
            step(f"3/5  registered {ref} and promoted it to production")
        elif accuracy < THRESHOLD:
            step(f"3/5  registered {ref}, not promoted: val_accuracy {accuracy:.4f} is below {THRESHOLD}")
        else:
            step(f"3/5  registered {ref}, not promoted: production's version {production} does better")
        print(f"{ref}: READY, {version.size_bytes} bytes, sha256 {version.sha256[:12]}, val_accuracy {accuracy:.4f}")
        print(f"{args.model}@production -> {production if production is not None else 'nothing'}")
        if production is None:
            raise errors.FailedPrecondition(f"{args.model} has no production version to serve")

        step(f"4/5  serve {args.model}@production (RepositoryModelLoad)")
        inference.load(args.model, alias="production")
        meta = inference.model_metadata(args.model)
        print(
            f"inference serves {args.model}/{meta.versions[0] if meta.versions else '?'}: "
            f"{meta.inputs[0].name} {meta.inputs[0].datatype} {list(meta.inputs[0].shape)} -> "
            f"{meta.outputs[0].name} {list(meta.outputs[0].shape)}"
        )

        step("5/5  classify the held-out digits through the Open Inference Protocol")
        x, y = held_out(args.seed, args.validation_split)
        result = inference.infer_array(args.model, x)
        predicted = result.outputs[meta.outputs[0].name].argmax(axis=1)
        accuracy = float(np.mean(predicted == y))
        sketches = [sketch(x[i]) for i in range(6)]
        for row in range(8):
            print("  " + "    ".join(art[row] for art in sketches))
        print("  " + "    ".join(f"true {y[i]} -> {predicted[i]}".ljust(16) for i in range(6)))
        wrong = int(np.sum(predicted != y))
        print(
            f"\n{args.model}/{result.version} classified {len(y)} held-out digits: accuracy {accuracy:.4f} "
            f"({wrong} wrong), in {time.monotonic() - T0:.1f}s from the start"
        )
        for client in (inference, trainer, registry):
            client.close()
        if accuracy < THRESHOLD:
            print(f"demo: accuracy {accuracy:.4f} is below {THRESHOLD}", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=MODEL,
        help=f"registry model the demo registers its versions in and promotes (default {MODEL}, "
        "a name of its own so that a model of yours named digits is left alone)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--validation-split", type=float, default=0.2)
    args = parser.parse_args()
    try:
        return run(args)
    except errors.MaasError as exc:
        print(f"demo failed: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
