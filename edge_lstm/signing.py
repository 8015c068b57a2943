"""Signed releases: a bundle's files pinned by sha256 in a release document, signed with Ed25519.

    release.json   {"format": "edge-lstm-release", "format_version": 1, "bundle": "airline-lstm",
                    "version": 20261204120000, "rollback": false, "created": "...Z",
                    "files": [{"name": "manifest.json", "sha256": "...", "bytes": 1234}, ...]}
    signature      64 bytes: Ed25519 over the exact bytes of release.json

The signature covers the exact bytes received (never a re-serialized copy: key order and
whitespace would change), and covers the version and the rollback flag, so that nobody can
replay an old signed bundle as new. `manifest.json` is one of the files, so the bundle's own
manifest, which pins each variant by sha256 again, is signed too. Keys are PEM files:
PKCS#8 private keys and SubjectPublicKeyInfo public keys, as `edge-lstm keygen` and
`openssl genpkey -algorithm ed25519` write them. The crypto is `cryptography`'s (pyca); it is
imported only here and only when used (the `rollout` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_lstm.errors import ConfigError, RolloutError

RELEASE_FORMAT = "edge-lstm-release"
RELEASE_VERSION = 1
#: Most files in one release (a bundle has a handful).
MAX_FILES = 64
SIGNATURE_BYTES = 64
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError(
            "signed rollouts need the 'cryptography' package: pip install 'edge-lstm[rollout]'"
        ) from None
    return ed25519


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: a plain name inside the bundle, its sha256 and size."""

    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Release:
    """A parsed release document (see the module docstring); `sha256` hashes its exact bytes."""

    bundle: str
    version: int
    rollback: bool
    created: str
    files: tuple[ReleaseFile, ...]
    sha256: str

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def label(self) -> str:
        """`name v<version>`, for messages."""
        return f"{self.bundle} v{self.version}"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in blocks (bundles may be larger than a device's spare RAM)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_release(bundle_dir: str | Path, *, version: int, rollback: bool = False) -> bytes:
    """The release document of every file in `bundle_dir`, as the exact bytes to sign."""
    from edge_lstm.bundle import Bundle

    root = Path(bundle_dir)
    bundle = Bundle.open(root)  # a bundle at all, and its manifest is sound
    files = []
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.is_symlink() or not _FILE_NAME.fullmatch(path.name):
            raise RolloutError("bad-release", f"{path}: a released bundle holds only plain files with plain names")
        files.append({"name": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size})
    if len(files) > MAX_FILES:
        raise RolloutError("bad-release", f"{root}: {len(files)} files, at most {MAX_FILES} may be released")
    if not _FILE_NAME.fullmatch(bundle.name):
        raise RolloutError("bad-release", f"{root}: bundle name {bundle.name!r} must be a plain name "
                                          "(letters, digits, '.', '_', '-')")
    doc = {
        "format": RELEASE_FORMAT, "format_version": RELEASE_VERSION, "bundle": bundle.name,
        "version": int(version), "rollback": bool(rollback),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "files": files,
    }
    return json.dumps(doc, indent=1).encode()


def parse_release(raw: bytes) -> Release:
    """Check a release document's structure; RolloutError `bad-release` naming what is wrong."""
    def bad(problem: str) -> RolloutError:
        return RolloutError("bad-release", f"release document: {problem}")

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != RELEASE_FORMAT:
        raise bad(f"'format' must be {RELEASE_FORMAT!r}")
    if doc.get("format_version") != RELEASE_VERSION:
        raise bad(f"format_version {doc.get('format_version')!r} is not one this runtime knows ({RELEASE_VERSION})")
    name, version, files = doc.get("bundle"), doc.get("version"), doc.get("files")
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise bad(f"'bundle' must be a plain name, found {name!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"'version' must be a positive integer, found {version!r}")
    if not isinstance(doc.get("rollback"), bool):
        raise bad("'rollback' must be true or false")
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise bad(f"'files' must list 1 to {MAX_FILES} files")
    out = []
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not _FILE_NAME.fullmatch(f["name"]):
            raise bad(f"files[{i}] needs a plain 'name'")
        if not isinstance(f.get("sha256"), str) or not _HEX64.fullmatch(f["sha256"]):
            raise bad(f"files[{i}] ({f['name']}) needs a 'sha256' of 64 hex digits")
        size = f.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"files[{i}] ({f['name']}) needs 'bytes' >= 0")
        out.append(ReleaseFile(f["name"], f["sha256"], size))
    names = [f.name for f in out]
    if len(set(names)) != len(names) or "manifest.json" not in names:
        raise bad("file names must be distinct and include manifest.json")
    return Release(name, version, doc["rollback"], str(doc.get("created", "")), tuple(out),
                   hashlib.sha256(raw).hexdigest())


# ----------------------------------------------------------------------------- keys


def key_id(public_key: Any) -> str:
    """A short id of a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    from cryptography.hazmat.primitives import serialization as s

    raw = public_key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PEM file (PKCS#8, unencrypted); ConfigError otherwise."""
    return _load_pem(Path(path), private=True)


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file (SubjectPublicKeyInfo); ConfigError otherwise."""
    return _load_pem(Path(path), private=False)


def _load_pem(path: Path, *, private: bool) -> Any:
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization as s

    what = "private key" if private else "public key"
    try:
        data = path.read_bytes()
        key = s.load_pem_private_key(data, password=None) if private else s.load_pem_public_key(data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        how = ("`edge-lstm keygen NAME` or `openssl genpkey -algorithm ed25519 -out NAME.key`" if private else
               "`openssl pkey -in NAME.key -pubout -out NAME.pub`")
        raise ConfigError(f"{path}: not an unencrypted PEM {what} ({exc}); make one with {how}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, expected an Ed25519 {what}")
    return key


def generate_key_files(stem: str | Path) -> tuple[Path, Path]:
    """Write a new key pair as `<stem>.key` (PKCS#8 PEM, mode 0600) and `<stem>.pub`; refuses
    to overwrite either."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization as s

    stem = Path(stem)
    private, public = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for p in (private, public):
        if p.exists():
            raise ConfigError(f"{p}: exists already; keygen never overwrites a key")
    sk = ed25519.Ed25519PrivateKey.generate()
    pem = sk.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(sk.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def sign(raw: bytes, private_key: Any) -> bytes:
    """The detached Ed25519 signature (64 bytes) of `raw`."""
    return private_key.sign(raw)


def verify(raw: bytes, signature: bytes | None, signer: str | None, trusted: Mapping[str, Any]) -> Release:
    """The release in `raw`, if `signature` is a valid signature of exactly these bytes by the
    trusted key `signer`; RolloutError `unsigned`, `unknown-key` or `bad-signature` otherwise."""
    from cryptography.exceptions import InvalidSignature

    if not signature:
        raise RolloutError("unsigned", "the bundle offer carries no signature: unsigned bundles are refused "
                                       "(sign it: edge-lstm publish-bundle --key KEY)")
    key = trusted.get(signer or "")
    if key is None:
        raise RolloutError("unknown-key", f"signed by key {signer!r}, which is not among this device's trusted keys "
                                          f"({', '.join(sorted(trusted)) or 'none'}; rollout.trusted_keys)")
    if len(signature) != SIGNATURE_BYTES:
        raise RolloutError("bad-signature", f"the signature is {len(signature)} bytes, an Ed25519 one has 64")
    try:
        key.verify(signature, raw)
    except InvalidSignature:
        raise RolloutError("bad-signature", f"the signature does not match the release document for key {signer}: "
                                            "the offer was altered, or signed with another key") from None
    return parse_release(raw)
