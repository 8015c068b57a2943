"""Open an edge-lstm bundle: read the manifest, check it, and hand out verified variant bytes.

The bundle is the contract between the exporter and the device (DESIGN.md). Nothing in it is
pickled; every variant's sha256 is checked before an engine sees the bytes, and every file the
manifest names must lie inside the bundle directory (a manifest is input too: `../../x.onnx`
or a symlink out of the directory is refused, not loaded).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edge_lstm.errors import BundleError, BundleIntegrityError

FORMAT = "edge-lstm-bundle"
FORMAT_VERSION = 1
#: Preference when no precision is asked for: the most accurate first.
PRECISION_ORDER = ("fp32", "fp16", "int16x8", "int8-dynamic", "int8-static")
_REQUIRED = ("format", "format_version", "features", "targets", "window", "state", "io", "variants")


@dataclass(frozen=True)
class Variant:
    """One file of the bundle that an engine can run."""

    file: str
    backend: str
    precision: str
    sha256: str
    bytes: int
    path: Path


class Bundle:
    """A bundle directory, its manifest checked on open.

    `sha256` hashes manifest.json, which pins every variant's hash: it is the bundle's identity
    (snapshots are restored only into the bundle they were taken from).
    """

    def __init__(self, path: Path, manifest: dict, sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.sha256 = sha256

    @classmethod
    def open(cls, path: str | Path) -> "Bundle":
        """Read and check `path/manifest.json`; raise BundleError naming the problem and the fix."""
        path = Path(path)
        mf = path / "manifest.json"
        if not path.is_dir():
            raise BundleError(f"{path}: no such bundle directory; export one with `edge-lstm export MODEL --out {path}`")
        try:
            raw = mf.read_bytes()
        except OSError:
            raise BundleError(f"{mf}: missing; a bundle directory holds manifest.json (re-export the bundle)") from None
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"{mf}: not valid JSON ({exc}); the file is corrupt, re-export the bundle") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{mf}: expected a JSON object, found {type(manifest).__name__}")
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise BundleError(f"{mf}: missing key(s) {missing}; re-export the bundle")
        if manifest["format"] != FORMAT:
            raise BundleError(f"{mf}: format is {manifest['format']!r}, expected {FORMAT!r}")
        if manifest["format_version"] != FORMAT_VERSION:
            raise BundleError(
                f"{mf}: format_version {manifest['format_version']!r} is not one this runtime knows "
                f"({FORMAT_VERSION}); upgrade edge-lstm on the device or re-export with this version"
            )
        bundle = cls(path, manifest, hashlib.sha256(raw).hexdigest())
        bundle._check_state()
        bundle.units  # optional, but checked now when present
        return bundle

    def _check_state(self) -> None:
        state = self.manifest["state"]
        covered = []
        for layer in state.get("layers", []):
            for key in ("h", "c"):
                if key in layer:
                    covered.extend(range(*layer[key]))
        if sorted(covered) != list(range(int(state.get("size", -1)))):
            raise BundleError(
                f"{self.path / 'manifest.json'}: state.layers slices do not tile 0..{state.get('size')}; "
                "the manifest is corrupt, re-export the bundle"
            )

    # -- what the manifest says -------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def targets(self) -> list[str]:
        return list(self.manifest["targets"])

    @property
    def window(self) -> int | None:
        w = self.manifest["window"]
        return None if w is None else int(w)

    @property
    def units(self) -> dict[str, str]:
        """The optional unit of each target (manifest `"units": {"passengers": "k"}`); {} when
        the manifest has none (format_version 1 bundles may or may not carry it)."""
        units = self.manifest.get("units", {})
        if not isinstance(units, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in units.items()):
            raise BundleError(f"{self.path / 'manifest.json'}: 'units' must map target names to unit strings, "
                              f"found {units!r}")
        return dict(units)

    @property
    def state_size(self) -> int:
        return int(self.manifest["state"]["size"])

    @property
    def layers(self) -> list[dict]:
        return list(self.manifest["state"]["layers"])

    @cached_property
    def variants(self) -> list[Variant]:
        out = []
        mf = self.path / "manifest.json"
        for i, v in enumerate(self.manifest["variants"]):
            try:
                file, backend, precision, sha = v["file"], v["backend"], v["precision"], v["sha256"]
                size = int(v.get("bytes", -1))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BundleError(f"{mf}: variants[{i}] lacks file/backend/precision/sha256") from None
            out.append(Variant(file, backend, precision, sha, size, self._inside(file, f"variants[{i}].file")))
        return out

    def _inside(self, name: object, key: str) -> Path:
        """The path of a file the manifest names, which must be a plain relative path that
        stays inside the bundle directory, symlinks resolved; BundleError otherwise."""
        mf = self.path / "manifest.json"
        if not isinstance(name, str) or not name or "\x00" in name:
            raise BundleError(f"{mf}: {key} must be a file name inside the bundle, found {name!r}")
        rel = Path(name)
        root = self.path.resolve()
        try:
            outside = rel.is_absolute() or ".." in rel.parts or root not in (root / rel).resolve().parents
        except (OSError, RuntimeError):  # a symlink loop
            outside = True
        if outside:
            raise BundleError(
                f"{mf}: {key} is {name!r}, which points outside the bundle directory {root}; a manifest "
                "may only name files inside its own bundle (tampered or hand-edited manifest: re-export it)"
            )
        return self.path / rel

    def variant(self, backend: str, precision: str | None = None) -> Variant:
        """The variant for `backend`: `precision` if given, else the most accurate one there is."""
        mine = [v for v in self.variants if v.backend == backend]
        if precision is not None:
            for v in mine:
                if v.precision == precision:
                    return v
            have = sorted({f"{v.backend}/{v.precision}" for v in self.variants})
            raise BundleError(f"{self.path}: no {backend} variant with precision {precision!r}; the bundle has {have}")
        if not mine:
            have = sorted({v.backend for v in self.variants})
            raise BundleError(f"{self.path}: no {backend} variant; the bundle has {have}")
        rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
        return min(mine, key=lambda v: rank.get(v.precision, len(rank)))

    def read_variant(self, variant: Variant) -> bytes:
        """The variant's bytes, after checking them against the manifest's sha256."""
        try:
            data = variant.path.read_bytes()
        except OSError:
            raise BundleError(f"{variant.path}: listed in the manifest but missing; copy the whole bundle directory") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != variant.sha256:
            raise BundleIntegrityError(
                f"{variant.path}: sha256 {digest[:12]}... does not match the manifest's {variant.sha256[:12]}...; "
                "the file is corrupt or was changed after export: copy the bundle again"
            )
        return data

    def read_weights(self) -> dict[str, np.ndarray]:
        """The NumPy backend's arrays, hash-checked and loaded without pickle."""
        import io

        data = self.read_variant(self.variant("numpy"))
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except ValueError as exc:
            raise BundleError(f"{self.path / 'weights.npz'}: unreadable ({exc}); re-export the bundle") from None
