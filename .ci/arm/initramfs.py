#!/usr/bin/env python3
"""Write the tiny initramfs the qemu-system stage of .ci/arm-lanes boots (runs on the host, natively).

Usage: initramfs.py KERNEL_TREE BUSYBOX INIT OUT.cpio.gz MODULE...

KERNEL_TREE is a Debian linux-image package extracted (lib/modules/VERSION/...); BUSYBOX a static
busybox for the guest; INIT the /init script. The named modules and everything they depend on (read
from each module's own .modinfo `depends=`, since an extracted package has no modules.dep) are
decompressed and listed in load order in /modules.order; modules built into the kernel are skipped.
Debian's own initramfs-tools would do the same, but under emulation and far slower.
"""

from __future__ import annotations

import gzip
import lzma
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set


def _newc(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields)
    body = head + name.encode() + b"\0"
    body += b"\0" * (-len(body) % 4) + data
    return body + b"\0" * (-len(body) % 4)


def _decompress(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(raw)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    if path.suffix == ".gz":
        return gzip.decompress(raw)
    return raw


def _modname(path: Path) -> str:
    return path.name.split(".ko")[0].replace("-", "_")


def _depends(blob: bytes) -> List[str]:
    at = blob.find(b"\0depends=")
    if at < 0:
        return []
    value = blob[at + 9 : blob.index(b"\0", at + 1)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def main(argv: List[str]) -> int:
    if len(argv) < 5:
        sys.stderr.write(__doc__ or "")
        return 2
    tree, busybox, init, out = Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4])
    wanted = argv[5:]
    # lib/modules (Debian 12) or usr/lib/modules (Debian 13: merged /usr)
    (moddir,) = [d for base in ("lib", "usr/lib") if (tree / base / "modules").is_dir()
                 for d in (tree / base / "modules").iterdir()]
    builtin = {
        _modname(Path(line.strip())) for line in (moddir / "modules.builtin").read_text().splitlines() if line
    }
    files: Dict[str, Path] = {_modname(p): p for p in moddir.rglob("*.ko*")}
    order: List[str] = []
    blobs: Dict[str, bytes] = {}
    seen: Set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in files:
            raise SystemExit(f"initramfs.py: module {name} is neither built in nor in {moddir}")
        blob = _decompress(files[name])
        for dep in _depends(blob):
            visit(dep)
        blobs[name] = blob
        order.append(name)

    for name in wanted:
        visit(name)
    entries = [("bin", 0o40755, b""), ("modules", 0o40755, b""), ("newroot", 0o40755, b"")]
    entries += [("dev", 0o40755, b""), ("proc", 0o40755, b""), ("sys", 0o40755, b"")]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("init", 0o100755, init.read_bytes()))
    entries += [(f"modules/{n}.ko", 0o100644, blobs[n]) for n in order]
    entries.append(("modules.order", 0o100644, "".join(f"{n}\n" for n in order).encode()))
    archive = b"".join(_newc(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    archive += _newc("TRAILER!!!", 0, b"", 0)
    out.write_bytes(gzip.compress(archive, compresslevel=1))
    print(f"initramfs {out}: kernel {moddir.name}, modules {' '.join(order) or '(all built in)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
