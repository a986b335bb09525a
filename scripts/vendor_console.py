"""The console's browser libraries, copied from their npm packages into the repository.

``api_gateway/console/vendor/vendor.json`` declares each package (name, version, license,
the npm tarball's integrity) and the files taken from it with their SHA-256. The copies
are committed, so serving the console needs neither Node nor the network.

    python scripts/vendor_console.py --update   # fetch the declared versions, copy, record hashes
    python scripts/vendor_console.py --check    # fetch them again and compare byte for byte

Both use ``npm pack`` (the registry). ``tests/unit/test_console_vendor.py`` checks offline
that the committed files are the ones declared (hashes, and each package.json's version).
To move to another version: change ``version`` in vendor.json, clear ``integrity``, run
``--update`` and review the diff.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "api_gateway" / "console" / "vendor"
MANIFEST = VENDOR / "vendor.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(MANIFEST.read_text())
    return manifest


def fetch(name: str, version: str) -> tuple[bytes, str]:
    """The package's tarball from the registry and its integrity (sha512, SRI form)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(out.stdout)[0]
        data = (Path(tmp) / info["filename"]).read_bytes()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if info.get("integrity") and info["integrity"] != integrity:
        raise SystemExit(f"{name}@{version}: tarball does not match the registry's integrity")
    return data, integrity


def members(tarball: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[member.name.removeprefix("package/")] = handle.read()
    return out


def update() -> int:
    manifest = load_manifest()
    for package in manifest["packages"]:
        tarball, integrity = fetch(package["name"], package["version"])
        if package.get("integrity") and package["integrity"] != integrity:
            print(f"{package['name']}: integrity differs from vendor.json", file=sys.stderr)
            return 1
        package["integrity"] = integrity
        contents = members(tarball)
        declared = json.loads(contents["package.json"])
        package["license"] = declared.get("license", "")
        for entry in package["files"]:
            data = contents[entry["from"]]
            target = VENDOR / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            entry["sha256"] = sha256(data)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendored {', '.join(p['name'] + '@' + p['version'] for p in manifest['packages'])}")
    return 0


def check() -> int:
    problems: list[str] = []
    for package in load_manifest()["packages"]:
        tarball, integrity = fetch(package["name"], package["version"])
        if integrity != package["integrity"]:
            problems.append(f"{package['name']}@{package['version']}: registry integrity {integrity}")
        contents = members(tarball)
        for entry in package["files"]:
            if (VENDOR / entry["path"]).read_bytes() != contents.get(entry["from"]):
                problems.append(f"{entry['path']} differs from {package['name']}@{package['version']}/{entry['from']}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("vendored files match their npm packages")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--update", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args()
    return update() if args.update else check()


if __name__ == "__main__":
    raise SystemExit(main())
