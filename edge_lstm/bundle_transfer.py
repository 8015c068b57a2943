"""A signed bundle as MQTT messages: one retained offer, then retained chunks of each file.

    <topic>                         the offer (JSON, retained): transfer id, the release document
                                    (base64), its Ed25519 signature (base64), the signer's key id,
                                    the chunk size
    <topic>/<transfer>/<i>/<n>      chunk n of file i of the release (raw bytes, retained)

Retained, so that a device that is offline (or behind a bridge whose uplink is down) gets the
bundle when it comes back. A device verifies the offer's signature before it subscribes to a
single chunk, writes chunks to disk as they come (a bundle never sits whole in RAM), and
unsubscribes once the files are complete, so the chunks are not sent again at every reconnect.
Chunks are plain payloads of at most `chunk_size` bytes (256 KiB by default: under the 1 MB
retained limit of EMQX's defaults; mosquitto has none).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_lstm.errors import RolloutError
from edge_lstm.signing import Release

OFFER_FORMAT = "edge-lstm-offer"
DEFAULT_CHUNK = 256 * 1024
MIN_CHUNK, MAX_CHUNK = 1024, 16 * 1024 * 1024
#: Largest offer payload accepted (the release document of 64 files is a few KiB).
MAX_OFFER = 256 * 1024
_TRANSFER = re.compile(r"[0-9a-f]{16,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of a file of `size` bytes (an empty file still has one, empty, chunk)."""
    return max(1, -(-size // chunk_size))


@dataclass(frozen=True)
class Offer:
    """The retained offer message."""

    transfer: str
    release: bytes  # the exact signed bytes
    signature: bytes | None
    key_id: str | None
    chunk_size: int = DEFAULT_CHUNK

    def encode(self) -> bytes:
        doc = {"format": OFFER_FORMAT, "format_version": 1, "transfer": self.transfer,
               "release": base64.b64encode(self.release).decode(),
               "signature": base64.b64encode(self.signature).decode() if self.signature else None,
               "key_id": self.key_id, "chunk_size": self.chunk_size}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> "Offer":
        """Parse an offer; RolloutError `bad-offer` saying what is wrong."""
        def bad(problem: str) -> RolloutError:
            return RolloutError("bad-offer", f"bundle offer: {problem}")

        if len(payload) > MAX_OFFER:
            raise bad(f"{len(payload)} bytes, the limit is {MAX_OFFER}")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad(f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != OFFER_FORMAT or doc.get("format_version") != 1:
            raise bad(f"expected a JSON object with format {OFFER_FORMAT!r}, format_version 1")
        transfer, key, size = doc.get("transfer"), doc.get("key_id"), doc.get("chunk_size")
        if not isinstance(transfer, str) or not _TRANSFER.fullmatch(transfer):
            raise bad(f"'transfer' must be 16 to 64 hex digits, found {transfer!r}")
        if key is not None and (not isinstance(key, str) or not _KEY_ID.fullmatch(key)):
            raise bad(f"'key_id' must be 16 hex digits, found {key!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not MIN_CHUNK <= size <= MAX_CHUNK:
            raise bad(f"'chunk_size' must be {MIN_CHUNK} to {MAX_CHUNK} bytes, found {size!r}")
        try:
            release = base64.b64decode(doc.get("release") or "", validate=True)
            sig = doc.get("signature")
            signature = base64.b64decode(sig, validate=True) if sig else None
        except (binascii.Error, TypeError, ValueError):
            raise bad("'release' and 'signature' must be base64") from None
        if not release:
            raise bad("no release document")
        return cls(transfer, release, signature, key, size)

    def chunk_topic(self, base: str, file_index: int, n: int) -> str:
        return f"{base}/{self.transfer}/{file_index}/{n}"

    def chunk_topics(self, base: str, release: Release) -> list[str]:
        """Every chunk topic of this offer (to clear them once devices have the bundle)."""
        return [self.chunk_topic(base, i, n) for i, f in enumerate(release.files)
                for n in range(chunk_count(f.bytes, self.chunk_size))]


def chunk_messages(bundle_dir: Path, offer: Offer, release: Release, base: str) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of every chunk, read from the bundle's files one chunk at a time."""
    for i, f in enumerate(release.files):
        with open(Path(bundle_dir) / f.name, "rb") as fh:
            for n in range(chunk_count(f.bytes, offer.chunk_size)):
                yield offer.chunk_topic(base, i, n), fh.read(offer.chunk_size)


class Assembly:
    """One transfer being received: each chunk written at its offset in a staging directory."""

    def __init__(self, offer: Offer, release: Release, staging: Path) -> None:
        self.offer, self.release, self.staging = offer, release, staging
        staging.mkdir(parents=True)
        self._missing: list[set[int]] = []
        for f in release.files:
            with open(staging / f.name, "wb") as fh:
                fh.truncate(f.bytes)
            self._missing.append(set(range(chunk_count(f.bytes, offer.chunk_size))))
        self._left = sum(len(m) for m in self._missing)

    @property
    def complete(self) -> bool:
        return self._left == 0

    def add(self, suffix: str, data: bytes) -> bool:
        """Write the chunk at `<i>/<n>` (the topic after `<topic>/<transfer>/`); True once every
        chunk is in. A repeated chunk is written again (retained re-delivery); a chunk of the
        wrong size or index is a RolloutError `bad-chunk`."""
        try:
            i, n = (int(x) for x in suffix.split("/"))
            f = self.release.files[i]
        except (ValueError, IndexError):
            raise RolloutError("bad-chunk", f"chunk topic suffix {suffix!r} names no file of the release") from None
        size = self.offer.chunk_size
        count = chunk_count(f.bytes, size)
        want = min(size, f.bytes - n * size) if 0 <= n < count else -1
        if want < 0 or len(data) != want:
            raise RolloutError("bad-chunk", f"chunk {n} of {f.name} has {len(data)} bytes, expected "
                                            f"{want if want >= 0 else 'no such chunk'}")
        fd = os.open(self.staging / f.name, os.O_WRONLY)
        try:
            os.pwrite(fd, data, n * size)
        finally:
            os.close(fd)
        if n in self._missing[i]:
            self._missing[i].discard(n)
            self._left -= 1
        return self.complete
