"""Sign the built-in model catalog with the project key (maintainers only).

Rewrites the block between the "project signatures" markers in src/trustcam/vision/catalog.py: the project public
key and one Ed25519 signature per catalog entry (models and pinned assets). Run it after changing any entry, then
commit catalog.py. The private key never enters the repository; keep it offline.

    python scripts/sign_catalog.py --key ~/keys/trustcam-catalog.key          # re-sign with the project key
    python scripts/sign_catalog.py --key NEW.key --new-key                     # create a new project key (rotation)
    python scripts/sign_catalog.py --check                                     # CI: every entry verifies
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from trustcam.vision import catalog

CATALOG_PY = Path(__file__).resolve().parents[1] / "src" / "trustcam" / "vision" / "catalog.py"
BLOCK = re.compile(r"(# --- project signatures: .*?\n)(.*?)(# --- end of project signatures ---)", re.S)


def entries() -> list[catalog.ModelSpec | catalog.AssetSpec]:
    return [*catalog.CATALOG.values(), *catalog.ASSETS.values()]


def check() -> int:
    """Exit status 1 if any built-in entry is unsigned or its signature fails (what CI runs)."""
    problems = [c.problem for c in map(catalog.check_signature, entries()) if c.problem]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{len(entries())} entries verify with project key {catalog.fingerprint(catalog.PROJECT_PUBLIC_KEY)}")
    return 1 if problems else 0


def render(public_key: str, signatures: dict[str, str]) -> str:
    lines = [f'PROJECT_PUBLIC_KEY = "{public_key}"', "SIGNATURES: dict[str, str] = {"]
    lines += [f'    "{name}": "{sig[:64]}"\n    "{sig[64:]}",' for name, sig in signatures.items()]
    return "\n".join([*lines, "}", ""])


def sign(key_path: Path, new_key: bool) -> int:
    if new_key and key_path.exists():
        print(f"error: {key_path} exists; --new-key creates a new key, give a path that does not exist",
              file=sys.stderr)
        return 2
    key, _ = catalog.load_signing_key(key_path, create=new_key)
    public = catalog.public_hex(key)
    if not new_key and public != catalog.PROJECT_PUBLIC_KEY:
        print(f"error: {key_path} is key {catalog.fingerprint(public)[:16]}…, not the project key "
              f"{catalog.fingerprint(catalog.PROJECT_PUBLIC_KEY)[:16]}…; use the project key, or --new-key to "
              "replace it (every release signed by the old key then needs re-signing)", file=sys.stderr)
        return 2
    signatures = {spec.name: catalog.sign_entry(spec, key) for spec in entries()}
    source = CATALOG_PY.read_text()
    if not BLOCK.search(source):
        print(f"error: the project-signatures markers are missing from {CATALOG_PY}; restore them", file=sys.stderr)
        return 2
    CATALOG_PY.write_text(BLOCK.sub(lambda m: m.group(1) + render(public, signatures) + m.group(3), source, 1))
    print(f"signed {len(signatures)} entries with project key {catalog.fingerprint(public)}; commit {CATALOG_PY}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", type=Path, help="the project's private key (raw 32 bytes or PEM, mode 0600)")
    parser.add_argument("--new-key", action="store_true", help="create a new project key at --key (0600)")
    parser.add_argument("--check", action="store_true", help="only verify the committed signatures")
    args = parser.parse_args()
    if args.check:
        return check()
    if args.key is None:
        parser.error("--key is required to sign (or use --check)")
    return sign(args.key.expanduser(), args.new_key)


if __name__ == "__main__":
    sys.exit(main())
