#!/usr/bin/env python3
"""Write a one-layer container image as a `docker save` tarball from local files, with no registry and no
docker: `ctr images import` and `docker load` both read it. Deterministic (fixed mtimes, root owner).

    mkimage.py --tag NAME:TAG --out image.tar --file SRC:DEST[:MODE] ... [--dir /tmp] --entrypoint /prog [ARG...]
"""

import argparse
import hashlib
import io
import json
import os
import tarfile


def add_dirs(tar: tarfile.TarFile, path: str, seen: set[str], mode: int = 0o755) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in seen:
            continue
        seen.add(d)
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = mode if i == len(parts) else 0o755
        tar.addfile(info)


def build_layer(files: list[str], dirs: list[str]) -> bytes:
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            # Directories such as /tmp must be world-writable with the sticky bit, like on a real system.
            add_dirs(tar, d, seen, 0o1777 if d.strip("/") == "tmp" else 0o755)
        for spec in files:
            src, dest, *mode = spec.split(":")
            parent = os.path.dirname(dest.strip("/"))
            if parent:
                add_dirs(tar, parent, seen)
            with open(src, "rb") as fh:
                data = fh.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = int(mode[0], 8) if mode else (0o755 if os.access(src, os.X_OK) else 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--file", action="append", default=[], help="SRC:DEST[:octal mode]")
    ap.add_argument("--dir", action="append", default=[], help="an empty directory in the image")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE")
    ap.add_argument("--entrypoint", nargs="+", required=True)
    args = ap.parse_args()

    layer = build_layer(args.file, args.dir)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": args.entrypoint,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", *args.env],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/cluster/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": [f"{diff_id}/layer.tar"]}]

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in (
            (f"{diff_id}/layer.tar", layer),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"{args.tag} -> {args.out} ({len(layer) // 1024} KiB layer)")


if __name__ == "__main__":
    main()
