"""Intake and digest: hostile archives are rejected with the right rule id."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import stat
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest
import rfc8785

from prism_eval.errors import EvaluatorError, Rejected
from prism_eval.supervisor.config import IntakeLimits
from prism_eval.supervisor.intake.bundle import (
    Bundle,
    BundleFile,
    _extract,
    _Member,
    bundle_digest,
    load_bundle,
)

ARCH = "def build_model(ctx):\n    return None\n"
TRAIN = "def train(ctx):\n    return None\n"
GIB = 1024**3
MIB = 1024**2


def write_zip(
    path: Path,
    members: Iterable[tuple[str, str | bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
    date_time: tuple[int, int, int, int, int, int] = (2024, 1, 1, 0, 0, 0),
) -> Path:
    """Write a zip with the given members, in order."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=date_time), data)
    return path


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write a directory bundle."""
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def load(source: Path, tmp_path: Path, **limits: int) -> Bundle:
    """Load into a fresh empty destination under tmp_path."""
    dest = tmp_path / f"dest-{len(list(tmp_path.glob('dest-*')))}"
    dest.mkdir()
    return load_bundle(source, dest, IntakeLimits(**limits))


def rule_of(source: Path, tmp_path: Path, **limits: int) -> str:
    """Load a bundle that must be rejected; return the rule id."""
    with pytest.raises(Rejected) as caught:
        load(source, tmp_path, **limits)
    return caught.value.rule_id


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def patch_central(path: Path, name: str, offset: int, value: int) -> None:
    """Overwrite a 4-byte (or 2-byte at offset 8) field of one central directory entry."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")  # first central directory header
    while True:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_len] == name.encode():
            break
        extra, comment = struct.unpack_from("<HH", data, start + 30)
        start += 46 + name_len + extra + comment
    struct.pack_into("<H" if offset == 8 else "<I", data, start + offset, value)
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# Intake: the happy path


def test_zip_bundle_is_extracted_read_only(tmp_path: Path) -> None:
    source = write_zip(
        tmp_path / "b.zip",
        [("architecture.py", ARCH), ("training.py", TRAIN), ("lib/helpers.py", "X = 1\n")],
    )
    bundle = load(source, tmp_path)
    assert [f.path for f in bundle.files] == ["architecture.py", "lib/helpers.py", "training.py"]
    assert bundle.files[0].sha256 == hashlib.sha256(ARCH.encode()).hexdigest()
    assert bundle.files[0].bytes == len(ARCH)
    assert bundle.read_text("training.py") == TRAIN
    assert stat.S_IMODE((bundle.root / "architecture.py").stat().st_mode) == 0o444
    assert stat.S_IMODE((bundle.root / "lib").stat().st_mode) == 0o555
    assert stat.S_IMODE(bundle.root.stat().st_mode) == 0o555


def test_read_text_refuses_a_path_outside_the_bundle(tmp_path: Path) -> None:
    bundle = load(write_zip(tmp_path / "b.zip", [("training.py", TRAIN)]), tmp_path)
    with pytest.raises(KeyError):
        bundle.read_text("../b.zip")


def test_os_litter_is_ignored_not_extracted(tmp_path: Path) -> None:
    source = write_zip(
        tmp_path / "b.zip",
        [
            ("architecture.py", ARCH),
            ("__MACOSX/._architecture.py", b"\x00\x05\x16\x07"),
            (".DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("__pycache__/architecture.cpython-311.pyc", b"\xa7\r\r\n"),
            ("lib/.DS_Store", b"\x00"),
        ],
    )
    bundle = load(source, tmp_path)
    assert [f.path for f in bundle.files] == ["architecture.py"]
    assert sorted(p.name for p in bundle.root.rglob("*")) == ["architecture.py"]


def test_single_top_level_folder_is_stripped(tmp_path: Path) -> None:
    source = write_zip(
        tmp_path / "b.zip",
        [("mybundle/", b""), ("mybundle/architecture.py", ARCH), ("mybundle/training.py", TRAIN)],
    )
    assert [f.path for f in load(source, tmp_path).files] == ["architecture.py", "training.py"]


# ---------------------------------------------------------------------------------------------
# Intake: attacks


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One member of 1 GiB of zeros, deflated to about 1 MiB; written in 1 MiB chunks."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    chunk = bytes(MIB)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("architecture.py", ARCH)
        with zf.open("training.py", "w") as sink:
            for _ in range(GIB // MIB):
                sink.write(chunk)
    return path


# The bomb's archive (about 1 MiB) is over the default archive cap, which would stop it before
# any inflation; these tests raise that cap so the streaming count is what must stop it.
BOMB_ARCHIVE_CAP = 16 * MIB


def test_zip_bomb_is_rejected_without_inflating(zip_bomb: Path, tmp_path: Path) -> None:
    limits = IntakeLimits(max_archive_bytes=BOMB_ARCHIVE_CAP)
    assert zip_bomb.stat().st_size < limits.max_archive_bytes
    tracemalloc.start()
    try:
        with pytest.raises(Rejected) as caught:
            load(zip_bomb, tmp_path, max_archive_bytes=BOMB_ARCHIVE_CAP)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.rule_id == "intake.too_large"
    assert tree_bytes(tmp_path) < limits.max_total_bytes
    assert peak_bytes < 16 * MIB


def test_member_longer_than_declared_is_cut_off_at_the_cap(tmp_path: Path) -> None:
    """The streaming count, not the declared size, decides: a member claiming 0 bytes."""
    endless = _Member("big.txt", 0, lambda: io.BytesIO(bytes(64 * MIB)))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Rejected) as caught:
        _extract([("big.txt", endless)], dest, IntakeLimits())
    assert caught.value.rule_id == "intake.too_large"
    assert tree_bytes(dest) <= IntakeLimits().max_file_bytes


def test_zip_bomb_with_lying_sizes_is_rejected_without_inflating(
    zip_bomb: Path, tmp_path: Path
) -> None:
    lying = tmp_path / "lying.zip"
    lying.write_bytes(zip_bomb.read_bytes())
    patch_central(lying, "training.py", 24, 100)  # uncompressed size: claims 100 bytes
    rule = rule_of(lying, tmp_path, max_archive_bytes=BOMB_ARCHIVE_CAP)
    assert rule == "intake.bad_archive"  # inflation stops; CRC fails
    assert tree_bytes(tmp_path / "dest-0") == 0


def test_many_small_members_over_the_total_cap_are_rejected(tmp_path: Path) -> None:
    members = [(f"part{i}.txt", "x" * 1000) for i in range(10)]
    source = write_zip(tmp_path / "b.zip", members)
    assert rule_of(source, tmp_path, max_total_bytes=5000) == "intake.too_large"


def test_the_default_caps_stop_a_bundle_carrying_a_pretrained_table(tmp_path: Path) -> None:
    """A 150k-parameter fp16 model, zlib + base64 in a string literal: about 400 KB of source,
    over the default total, while honest code (nanoGPT's model and loop: 31 KB) fits 8 times."""
    table = base64.b64encode(zlib.compress(os.urandom(300_000))).decode()
    source = write_zip(
        tmp_path / "b.zip",
        [("architecture.py", ARCH), ("training.py", f"WEIGHTS = {table!r}\n" + TRAIN)],
    )
    assert rule_of(source, tmp_path) == "intake.too_large"


def test_compressed_size_ignores_how_the_miner_zipped_it(tmp_path: Path) -> None:
    members = [("architecture.py", ARCH), ("training.py", TRAIN), ("notes.md", "x" * 5000)]
    stored = load(write_zip(tmp_path / "s.zip", members, zipfile.ZIP_STORED), tmp_path)
    deflated = load(write_zip(tmp_path / "d.zip", members, zipfile.ZIP_DEFLATED), tmp_path)
    assert stored.compressed_bytes == deflated.compressed_bytes
    assert stored.compressed_bytes < sum(f.bytes for f in stored.files)


def test_oversized_archive_is_rejected_before_opening(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("notes.txt", os.urandom(4096))], zipfile.ZIP_STORED)
    assert rule_of(source, tmp_path, max_archive_bytes=1024) == "intake.too_large"


def test_too_many_files_are_rejected(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [(f"m{i}.py", "") for i in range(5)])
    assert rule_of(source, tmp_path, max_files=4) == "intake.too_many_files"


@pytest.mark.parametrize(
    "name",
    ["../x.py", "a/../../x.py", "/etc/x.py", "a\\x.py", "C:/x.py", "./x.py", "a//b.py", ""],
)  # "": an empty name once crashed zipfile's is_dir() (IndexError) before the name check
def test_unsafe_member_path_is_rejected(tmp_path: Path, name: str) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH), (name, "x = 1\n")])
    assert rule_of(source, tmp_path) == "intake.unsafe_path"
    assert not (tmp_path / "x.py").exists()


def test_symlink_member_is_rejected(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("training.py")
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("architecture.py", ARCH)
        zf.writestr(info, "/etc/passwd")
    assert rule_of(tmp_path / "b.zip", tmp_path) == "intake.symlink"


def test_special_file_member_is_rejected(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("fifo.py")
    info.create_system = 3
    info.external_attr = (stat.S_IFIFO | 0o644) << 16
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr(info, "")
    assert rule_of(tmp_path / "b.zip", tmp_path) == "intake.special_file"


@pytest.mark.parametrize(
    "names",
    [
        ("training.py", "training.py"),
        ("Training.py", "training.py"),
        ("lib/model.py", "LIB/model.py"),
        ("caf\u00e9.py", "cafe\u0301.py"),  # NFC and NFD spellings of the same name
        ("a.py", "a.py/b.py"),
    ],
)
def test_duplicate_names_are_rejected(tmp_path: Path, names: tuple[str, str]) -> None:
    source = tmp_path / "b.zip"
    with pytest.warns(UserWarning) if names[0] == names[1] else contextlib.nullcontext():
        write_zip(source, [(names[0], "a = 1\n"), (names[1], "b = 2\n")])
    assert rule_of(source, tmp_path) == "intake.duplicate"


@pytest.mark.parametrize("name", ["evil.so", "run.sh", "LICENSE", "model.pt", "x.pyc.py.exe"])
def test_disallowed_suffix_is_rejected(tmp_path: Path, name: str) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH), (name, b"\x7fELF")])
    assert rule_of(source, tmp_path) == "intake.bad_suffix"


def test_suffixes_are_matched_whatever_their_case(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH), ("README.MD", "# Notes\n")])
    bundle = load(source, tmp_path)
    assert [f.path for f in bundle.files] == ["README.MD", "architecture.py"]


def test_non_utf8_text_is_rejected(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", b"x = '\xff\xfe'\n")])
    assert rule_of(source, tmp_path) == "intake.not_utf8"


def test_encrypted_member_is_rejected(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH)])
    patch_central(source, "architecture.py", 8, 0x1)  # general purpose flag: encrypted
    assert rule_of(source, tmp_path) == "intake.encrypted"


@pytest.mark.parametrize(
    "content", [b"", b"not a zip at all", b"PK\x03\x04" + os.urandom(200)], ids=str
)
def test_corrupt_archive_is_rejected(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "b.zip"
    source.write_bytes(content)
    assert rule_of(source, tmp_path) == "intake.bad_archive"


def test_truncated_archive_is_rejected(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH * 100)])
    source.write_bytes(source.read_bytes()[:-30])
    assert rule_of(source, tmp_path) == "intake.bad_archive"


def test_empty_zip_and_litter_only_zip_are_rejected(tmp_path: Path) -> None:
    assert rule_of(write_zip(tmp_path / "e.zip", []), tmp_path) == "intake.empty"
    litter = write_zip(tmp_path / "l.zip", [("__MACOSX/._x.py", b"\x00"), (".DS_Store", b"")])
    assert rule_of(litter, tmp_path) == "intake.empty"


def test_rejection_leaves_the_destination_empty(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH), ("z.py", b"\xff")])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Rejected):
        load_bundle(source, dest, IntakeLimits())
    assert list(dest.iterdir()) == []


def test_non_empty_destination_is_an_evaluator_error(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.py").write_text("")
    source = write_zip(tmp_path / "b.zip", [("architecture.py", ARCH)])
    with pytest.raises(EvaluatorError):
        load_bundle(source, dest, IntakeLimits())


def test_directory_with_symlink_is_rejected_without_following(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    root = write_tree(tmp_path / "src", {"architecture.py": ARCH})
    (root / "training.py").symlink_to(secret)
    assert rule_of(root, tmp_path) == "intake.symlink"


def test_directory_with_symlinked_folder_is_rejected(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"architecture.py": ARCH})
    (root / "lib").symlink_to("/etc", target_is_directory=True)
    assert rule_of(root, tmp_path) == "intake.symlink"


def test_directory_with_fifo_is_rejected(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"architecture.py": ARCH})
    os.mkfifo(root / "pipe.txt")
    assert rule_of(root, tmp_path) == "intake.special_file"


def test_directory_with_oversized_file_is_rejected(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"architecture.py": ARCH, "big.txt": "x" * 5000})
    assert rule_of(root, tmp_path, max_file_bytes=4096) == "intake.too_large"


# ---------------------------------------------------------------------------------------------
# Digest


FILES = [("architecture.py", ARCH), ("training.py", TRAIN), ("lib/helpers.py", "X = 1\n")]


def test_digest_is_sha256_of_canonical_sorted_pairs() -> None:
    files = [
        BundleFile(path=p, sha256=hashlib.sha256(d.encode()).hexdigest(), bytes=len(d))
        for p, d in FILES
    ]
    pairs = sorted([f.path, f.sha256] for f in files)
    assert rfc8785.dumps(pairs).startswith(b'[["architecture.py","')
    assert bundle_digest(files) == hashlib.sha256(rfc8785.dumps(pairs)).hexdigest()
    assert bundle_digest(reversed(files)) == bundle_digest(files)


def test_digest_ignores_member_order_compression_timestamps_and_container(
    tmp_path: Path,
) -> None:
    variants = [
        write_zip(tmp_path / "a.zip", FILES),
        write_zip(tmp_path / "b.zip", FILES[::-1], zipfile.ZIP_STORED),
        write_zip(tmp_path / "c.zip", FILES, zipfile.ZIP_BZIP2, (1999, 12, 31, 23, 59, 58)),
        write_zip(tmp_path / "d.zip", [(f"top/{p}", d) for p, d in FILES]),
        write_tree(tmp_path / "tree", dict(FILES)),
    ]
    digests = {load(v, tmp_path).sha256 for v in variants}
    assert len(digests) == 1


def test_digest_changes_with_content_or_path(tmp_path: Path) -> None:
    base = load(write_zip(tmp_path / "a.zip", FILES), tmp_path).sha256
    edited = load(
        write_zip(tmp_path / "b.zip", [*FILES[:2], ("lib/helpers.py", "X=2\n")]), tmp_path
    )
    moved = load(write_zip(tmp_path / "c.zip", [*FILES[:2], ("helpers.py", "X = 1\n")]), tmp_path)
    assert len({base, edited.sha256, moved.sha256}) == 3
