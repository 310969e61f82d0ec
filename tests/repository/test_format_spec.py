"""An independent reader written from docs/format.md only (no ferryman.repository internals).

If this test breaks, either the code or the specification is wrong.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import blake3
import msgpack
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ferryman.repository import Repository

from .conftest import PASSPHRASE
from .snapshots import make_files, store_files


def _derive(context: str, master: bytes, length: int = 32) -> bytes:
    h = blake3.blake3(derive_key_context=context)
    h.update(master)
    return h.digest(length)


def _payload(plain: bytes) -> bytes:
    if plain[0] == 0:
        return plain[1:]
    assert plain[0] == 1
    size = zstandard.frame_content_size(plain[1:])
    return zstandard.ZstdDecompressor().decompress(plain[1:], max_output_size=size)


def _envelope(k_enc: bytes, data: bytes, kind: int) -> bytes:
    magic, version, found = struct.unpack_from("<4sBB", data)
    assert (magic, version, found) == (b"FRMO", 1, kind)
    salt = data[6:22]
    key = blake3.blake3(salt, key=k_enc).digest()
    return _payload(AESGCM(key).decrypt(data[22:34], data[34:], data[:22]))


def test_a_reader_written_from_the_specification(repo: Repository, repo_url: str) -> None:
    files = make_files(3, count=6)
    with repo.open_writer("t", pack_size=50_000) as w:
        point = w.save_restore_point(share="spec", root=store_files(repo, w, files))
    root = Path(repo_url)

    # §3, §4: config and key slot -> master secret
    config = json.loads((root / "config").read_text())
    assert (config["format"], config["version"]) == ("ferryman-repository", 1)
    (slot_file,) = (root / "keys").iterdir()
    slot = json.loads(slot_file.read_text())
    w_key = Scrypt(
        salt=base64.b64decode(slot["salt"]), length=32, n=slot["n"], r=slot["r"], p=slot["p"]
    ).derive(PASSPHRASE.encode())
    wrapped = base64.b64decode(slot["wrapped"])
    master = AESGCM(w_key).decrypt(
        wrapped[:12], wrapped[12:], b"ferryman-key-slot:" + config["id"].encode()
    )
    k_enc = _derive("ferryman repository v1 2026-11-24 encryption key", master)
    k_id = _derive("ferryman repository v1 2026-11-24 blob id key", master)
    seed = (
        int.from_bytes(
            _derive("ferryman repository v1 2026-11-24 chunker seed", master, 8), "little"
        )
        >> 1
    ) | 1
    assert seed == repo.keys.chunker_seed

    # §11: restore point
    (point_file,) = (root / "points").iterdir()
    manifest = msgpack.unpackb(_envelope(k_enc, point_file.read_bytes(), 2), raw=False)
    assert manifest["id"] == point_file.name == point.id and manifest["share"] == "spec"

    # §8: index segments -> {blob id: (pack id, offset, length, raw, method, kind)}
    locations = {}
    for seg in (root / "index").iterdir():
        plain = _envelope(k_enc, seg.read_bytes(), 1)
        assert plain[:4] == b"FRMI"
        (n_packs,) = struct.unpack_from("<I", plain, 4)
        packs = [plain[8 + 16 * i : 24 + 16 * i] for i in range(n_packs)]
        pos = 8 + 16 * n_packs
        (n,) = struct.unpack_from("<I", plain, pos)
        for i in range(n):
            bid, pn, off, ln, raw, method, kind = struct.unpack_from(
                "<32sIIIIBB", plain, pos + 4 + 50 * i
            )
            locations[bid] = (packs[pn].hex(), off, ln, raw, method, kind)

    # §6, §7: blob records, read with the pack id only (no header needed)
    def blob(bid: bytes) -> bytes:
        pack_id, off, ln, raw, method, kind = locations[bid]
        folder = {1: "data", 2: "tree"}[kind]
        data = (root / folder / pack_id[:2] / pack_id).read_bytes()
        assert data[:6] == b"FRMP\x01" + bytes([kind]) and data[6:22].hex() == pack_id
        assert data[-4:] == b"FRME"
        key = blake3.blake3(bytes.fromhex(pack_id), key=k_enc).digest()
        rec = data[off : off + ln]
        plain = _payload(AESGCM(key).decrypt(rec[:12], rec[12:], bytes([kind]) + bid))
        assert len(plain) == raw
        assert blake3.blake3(plain, key=k_id).digest() == bid
        # and the pack's own table lists this record (§7)
        (table_len,) = struct.unpack_from("<I", data, len(data) - 8)
        sealed = data[len(data) - 8 - table_len : len(data) - 8]
        table = AESGCM(key).decrypt(sealed[:12], sealed[12:], data[:22] + b"table")
        (count,) = struct.unpack_from("<I", table)
        rows = [struct.unpack_from("<32sIIIBB", table, 4 + 46 * i) for i in range(count)]
        assert (bid, off, ln, raw, method, kind) in rows
        return plain

    # §10: trees -> files
    restored = {}

    def walk(prefix: bytes, tree_ids: list[bytes]) -> None:
        for tid in tree_ids:
            doc = msgpack.unpackb(blob(tid), raw=False)
            assert doc["v"] == 1
            for node in doc["nodes"]:
                path = prefix + node["n"]
                if node["t"] == "dir":
                    walk(path + b"/", node.get("st", []))
                else:
                    restored[path] = b"".join(blob(c) for c in node.get("c", []))

    (top,) = msgpack.unpackb(blob(manifest["root"]), raw=False)["nodes"]
    assert top["n"] == b"root" and top["t"] == "dir"
    walk(b"", top["st"])
    assert restored == files


def test_key_derivation_test_vectors_of_the_specification() -> None:
    master = bytes(range(32))
    k_enc = _derive("ferryman repository v1 2026-11-24 encryption key", master)
    k_id = _derive("ferryman repository v1 2026-11-24 blob id key", master)
    assert k_enc.hex() == "6c84ba87e4e3ec308500bcec1921f1ea9a19803c288ed3ef646608528f64d3b7"
    assert k_id.hex() == "9ce6bfaaf340a79c54834d5fe8694974956a4ea8969992914085b7330840b857"
    assert blake3.blake3(b"hello", key=k_id).hexdigest() == (
        "87c3b6242ac0eda8d69fe66ab3befdaae7584c7adbe0d578b9be2c5b33a3a3b2"
    )
    assert blake3.blake3(bytes(16), key=k_enc).hexdigest() == (
        "4a9ed43cdb1e553028d0a3cd8afc2bcf644416559bad48493d028ea1a275fde3"
    )
    from ferryman.repository.crypto import RepositoryKeys

    keys = RepositoryKeys.from_master(master)
    assert (keys.encryption, keys.blob_id, keys.chunker_seed) == (k_enc, k_id, 0x76016AD8C36E8117)
