"""Pin on first use (``images.digest: pin``, CONTRACTS §8): a tag's first run pins it to the
digest the kubelet reported for it (the pod's ``containerStatuses[].imageID``); a later run of
that tag whose image has another digest is refused, with both digests in the message.

The check is made when the kubelet reports the algorithm container's imageID, which is once the
container exists: a refused run is stopped then (its Job deleted, its output never sent, its
container token refused from its final status on), not before its first instructions ran. Where
that window matters, name images by digest (``images.digest: required``).
"""
from __future__ import annotations

import sys

from node.models import has_digest


def pin_key(image: str) -> str | None:
    """The tag a run's image is pinned under: ``name:tag`` (a bare name is ``name:latest``, what
    it pulls); None for a reference with a digest, which names its content already."""
    if has_digest(image):
        return None
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def mismatch(image: str, pinned: str, pinned_run: int, digest: str) -> str:
    return (f"image {image} is pinned to {pinned} (its first run, {pinned_run}); this run got "
            f"{digest}: the tag now names other content (images.digest: pin). If the new image is "
            f"intended: python -m node pins --config NODE.yaml --forget {image}")


def no_digest(image: str, image_id: str) -> str:
    return (f"image {image}: the kubelet reported no sha256 digest (imageID {image_id!r}), so "
            f"it cannot be pinned (images.digest: pin)")


def main(argv: list[str]) -> int:
    """``python -m node pins --config NODE.yaml [--forget IMAGE]``: the pins in the node's
    ledger, or drop one (the operator accepts the tag's new content; its next run pins again)."""
    import argparse
    from datetime import datetime, timezone
    from pathlib import Path

    from node.config import load_config
    from node.errors import NodeError
    from node.ledger import Ledger

    parser = argparse.ArgumentParser(prog="python -m node pins", description=main.__doc__)
    parser.add_argument("--config", required=True, help="node configuration (YAML)")
    parser.add_argument("--forget", metavar="IMAGE", help="drop the pin of this image")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        ledger = Ledger(Path(config.task_dir) / "node-ledger.sqlite")
    except NodeError as e:
        print(f"cannot open the node's ledger: {e}", file=sys.stderr)
        return 2
    try:
        if args.forget:
            key = pin_key(args.forget) or args.forget
            if not ledger.forget_pin(key):
                print(f"{key} is not pinned", file=sys.stderr)
                return 1
            print(f"forgot the pin of {key}; its next run pins it again")
            return 0
        for pin in ledger.pins():
            when = datetime.fromtimestamp(pin.pinned, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{pin.image}  {pin.digest}  run {pin.run_id}  {when}")
        return 0
    finally:
        ledger.close()
