"""Supervisor: build the embedded default dataset from the CPython 3.11 documentation sources.

The text is the reStructuredText source of the Python documentation as Debian ships it in
`python3.11-doc` (PSF licence). Each source file is cut into documents at its section headings,
the prose-heavy parts are kept up to a size budget, and
`prism_eval.supervisor.data.prepare.prepare_data` writes the locked split layout. The same
`.deb` always gives the same bytes.

    python examples/data/build.py                      # apt-get download python3.11-doc
    python examples/data/build.py --deb python3.11-doc_3.11.2-6+deb12u9_all.deb
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from prism_eval.supervisor.data.locked import MANIFEST_NAME, SPLITS, DataManifest, verify_data_dir
from prism_eval.supervisor.data.prepare import prepare_data

PACKAGE = "python3.11-doc"
SOURCES = "usr/share/doc/python3.11/html/_sources"
COPYRIGHT = "usr/share/doc/python3.11-doc/copyright"
# Taken whole, in this order; then library pages, most prose-heavy first, while the budget lasts.
CORE_PARTS = ("tutorial", "howto", "faq", "reference", "glossary.rst.txt", "extending", "using")
RANKED_PART = "library"
BUDGET_BYTES = 4_000_000  # JSONL bytes of all shards together (the repo caps it at 5 MB)
SHARD_BYTES = 1 << 20  # several train shards, so manifest order is exercised
MIN_DOCUMENT_BYTES = 200  # drops table-of-contents stubs
_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def log(message: str) -> None:
    """Print one progress line to stderr."""
    print(f"build: {message}", file=sys.stderr, flush=True)


def fetch_deb(directory: Path) -> Path:
    """Download the python3.11-doc package with apt into `directory`."""
    log(f"apt-get download {PACKAGE}")
    subprocess.run(["apt-get", "download", PACKAGE], cwd=directory, check=True)
    debs = sorted(directory.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise SystemExit(f"build: expected one {PACKAGE} .deb in {directory}, found {debs}")
    return debs[0]


def heading_starts(lines: list[str]) -> list[int]:
    """The first line (overline or title) of every reStructuredText section heading.

    A heading is a non-indented text line under an adornment line (`====`, `----`, …), optionally
    with the same adornment above it. Transitions (`------` between blank lines) are not headings.
    """
    starts = []
    for i in range(1, len(lines)):
        title = lines[i - 1]
        if not _ADORNMENT.match(lines[i]) or not title.strip() or title[0].isspace():
            continue
        if _ADORNMENT.match(title):
            continue
        overline = i >= 2 and lines[i - 2].rstrip() == lines[i].rstrip()
        starts.append(i - 2 if overline else i - 1)
    return starts


def split_sections(text: str) -> list[str]:
    """Cut one source file into its sections: a document starts at every section heading.

    Cutting at the top-level headings only gives about a thousand documents of up to 70 KB; one
    section per document gives more, self-contained ones (each opens with its own heading).
    """
    lines = text.splitlines(keepends=True)
    starts = [0]
    for first in heading_starts(lines):
        # labels and blank lines just above a heading belong to it (`.. _label:`)
        while first > 0 and (not lines[first - 1].strip() or lines[first - 1].startswith(".. _")):
            first -= 1
        if first > starts[-1]:
            starts.append(first)
    chunks = ["".join(lines[a:b]) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    return [chunk.strip("\n") + "\n" for chunk in chunks if chunk.strip()]


def prose_ratio(text: str) -> float:
    """Share of non-blank lines that are plain prose (not indented, not markup or tables)."""
    lines = [line for line in text.splitlines() if line.strip()]
    prose = [
        line
        for line in lines
        if not line[0].isspace()
        and not line.startswith(("..", "+", "|", "=", "-", "*", ">>>"))
        and not _ADORNMENT.match(line)
    ]
    return len(prose) / max(1, len(lines))


def document_lines(rel: str, text: str) -> list[bytes]:
    """The JSONL lines (`{"id": "<relpath>#<n>", "text": ...}`) of one source file."""
    sections = [s for s in split_sections(text) if len(s.encode()) >= MIN_DOCUMENT_BYTES]
    return [orjson.dumps({"id": f"{rel}#{n}", "text": s}) + b"\n" for n, s in enumerate(sections)]


def select_documents(sources: Path) -> list[bytes]:
    """Core parts whole, then library pages by prose ratio, within `BUDGET_BYTES`."""
    core: dict[str, list[bytes]] = {}
    for part in CORE_PARTS:
        path = sources / part
        files = sorted(path.rglob("*.rst.txt")) if path.is_dir() else [path]
        for file in files:
            rel = file.relative_to(sources).as_posix()
            core[rel] = document_lines(rel, file.read_text(encoding="utf-8"))
    used = sum(len(line) for lines in core.values() for line in lines)
    ranked = []
    for file in sorted((sources / RANKED_PART).rglob("*.rst.txt")):
        rel = file.relative_to(sources).as_posix()
        text = file.read_text(encoding="utf-8")
        ranked.append((-prose_ratio(text), rel, document_lines(rel, text)))
    chosen = dict(core)
    for _, rel, lines in sorted(ranked):
        size = sum(len(line) for line in lines)
        if used + size <= BUDGET_BYTES:
            chosen[rel] = lines
            used += size
    log(f"{len(chosen)} source files, {used} bytes of JSONL")
    return [line for rel in sorted(chosen) for line in chosen[rel]]


def license_text(copyright_file: Path) -> str:
    """The Python License section of the package's Debian copyright file, with a header."""
    text = copyright_file.read_text(encoding="utf-8")
    start = text.index("Python License\n==============")
    end = text.index("Licenses and Acknowledgements for Incorporated Software")
    header = (
        "The documents in this directory are taken from the Python 3.11 documentation\n"
        f"sources, as shipped in Debian's {PACKAGE} package. The Python documentation is\n"
        "distributed under the Python Software Foundation License Version 2 below\n"
        "(see also the package's /usr/share/doc/python3.11/html/license.html; code\n"
        "examples in the documentation are additionally under the Zero-Clause BSD licence).\n"
        f"The text below is copied from /{COPYRIGHT}.\n\n"
    )
    return header + text[start:end].rstrip() + "\n"


def readme_text(deb_name: str, deb_sha256: str, version: str, manifest: DataManifest) -> str:
    """README.md for the embedded dataset: source, licence, counts, digest, how to rebuild."""
    rows = "\n".join(
        f"| {name} | {len(entry.shards)} | {entry.documents} | {entry.bytes} |"
        for name, entry in manifest.splits.items()
    )
    total = sum(entry.bytes for entry in manifest.splits.values())
    return f"""# Embedded default dataset

English prose from the CPython 3.11 documentation sources (reStructuredText), as shipped in
Debian's `{PACKAGE}` package, version `{version}`
(`{deb_name}`, sha256 `{deb_sha256}`).
Licence: Python Software Foundation License Version 2 — see [LICENSE](LICENSE).

Each `.rst` source under `{SOURCES}/` is cut into documents at its section
headings (one section per document); id = `<path under _sources>#<n>`. The tutorial, howto, faq,
reference, glossary, extending and using parts are taken whole, then library pages in order of
their share of prose lines until the JSONL reaches {BUDGET_BYTES} bytes. Sections under
{MIN_DOCUMENT_BYTES} bytes are dropped. Documents are split by `int(sha256(id), 16) % 1000`
(train < 950, val < 975, test otherwise) by
`prism_eval.supervisor.data.prepare.prepare_data`, in shards of at most {SHARD_BYTES} bytes.

| split | shards | documents | bytes |
| --- | ---: | ---: | ---: |
{rows}

Total shard bytes: {total}. Manifest digest (sha256 of the RFC 8785 JSON of `splits`):
`{manifest.digest}`.

Rebuild (deterministic: the same `.deb` gives the same bytes):

```
.venv/bin/python examples/data/build.py            # apt-get download {PACKAGE}
.venv/bin/python examples/data/build.py --deb {deb_name}
```
"""


def build(deb: Path | None, out_dir: Path) -> DataManifest:
    """Build the dataset into `out_dir` (replacing its splits, manifest, LICENSE and README)."""
    with tempfile.TemporaryDirectory(prefix="prism-data-") as tmp_name:
        tmp = Path(tmp_name)
        deb = deb if deb is not None else fetch_deb(tmp)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        log(f"extracting {deb.name} ({version})")
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], check=True)
        documents = select_documents(tmp / "root" / SOURCES)
        source = tmp / "documents.jsonl"
        source.write_bytes(b"".join(documents))
        prepared = tmp / "prepared"
        manifest = prepare_data([source], prepared, shard_bytes=SHARD_BYTES)
        for name in (*SPLITS, MANIFEST_NAME):
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            if (prepared / name).exists():
                shutil.move(prepared / name, target)
        (out_dir / "LICENSE").write_text(license_text(tmp / "root" / COPYRIGHT), encoding="utf-8")
        deb_sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
        readme = readme_text(deb.name, deb_sha256, version, manifest)
        (out_dir / "README.md").write_text(readme, encoding="utf-8")
    verify_data_dir(out_dir)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the dataset, print a summary to stderr."""
    parser = argparse.ArgumentParser(description="Build the embedded default dataset.")
    parser.add_argument("--deb", type=Path, default=None, help=f"a local {PACKAGE} .deb")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    manifest = build(args.deb.resolve() if args.deb else None, args.out)
    for name, entry in manifest.splits.items():
        log(f"{name}: {entry.documents} documents, {entry.bytes} bytes")
    log(f"digest {manifest.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
