#!/usr/bin/env python3
"""Build the bundled example corpus of real SDK documentation.

The corpus is made from the docstrings of the public API of a handful of
Python standard-library modules (CPython 3.11).  One chunk is produced per
public function, class, method or property that has a non-empty, non-trivial
docstring:

* public names come from the module's ``__all__`` (or, when it has none, from
  ``dir()`` filtered to objects defined by the module or its C accelerator);
* methods/properties are those defined in the class's own ``__dict__``
  (inherited members are not repeated); names starting with ``_`` are skipped;
* docstrings that are empty, generic (e.g. ``"An enumeration."``,
  ``"Alias for field number 0"``) or identical to one already taken (in id
  order) are skipped;
* the default (bundled) corpus uses ``DEFAULT_MODULES`` minus a short list of
  narrow or platform-specific entries (``DEFAULT_EXCLUDE``), about 350 chunks;
  ``--all`` adds ``EXTRA_MODULES`` and drops the exclusions (~3,800 chunks).

Each chunk is a JSON object::

    {"id": "pathlib.Path.read_text",
     "content": "pathlib.Path.read_text(self, encoding=None, errors=None)\\n\\n<docstring>",
     "summary": "<first sentence of the docstring>",
     "module": "pathlib", "kind": "function" | "class" | "method",
     "source": "cpython-3.11 docstrings"}

``content`` is a header line (qualified name plus ``inspect.signature`` when
available; properties get the suffix `` (property)`` and kind "method"), a
blank line, and the docstring cleaned with ``inspect.cleandoc``, capped at
about 2,000 characters on a paragraph boundary (a capped docstring ends with
``[...]``).  ``summary`` is the first sentence, skipping legacy C signature
lines such as ``"od.copy() -> a shallow copy of od"``.  Chunks are sorted
by id, so the output is deterministic for a given Python version.  Docstrings
differ slightly between Python releases; the bundled file was made with
CPython 3.11.7.

Regenerate the bundled file with::

    python data/example/build_corpus.py --out data/example/chunks.json

Other uses::

    # a much larger corpus (>= 2,500 chunks) for benchmarks
    python data/example/build_corpus.py --all --out /tmp/big_chunks.jsonl
    # verify that every id referenced by a query / pair file exists
    python data/example/build_corpus.py --check-queries data/example/queries.jsonl \\
        --check-queries data/example/pairs.jsonl

The docstrings are part of CPython and are distributed under the PSF License.
Standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path

SOURCE = "cpython-3.11 docstrings"
MAX_DOC_CHARS = 2000
DEFAULT_MAX_CHUNKS = 400

# Modules of the bundled example corpus.  Chosen so the default output has
# roughly 300 chunks with varied, non-trivial documentation.
DEFAULT_MODULES = [
    "pathlib",
    "json",
    "collections",
    "itertools",
    "functools",
    "re",
    "datetime",
    "subprocess",
    "shutil",
    "os.path",
    "csv",
    "hashlib",
    "textwrap",
    "string",
    "tempfile",
    "glob",
    "fnmatch",
    "heapq",
    "bisect",
    "base64",
    "uuid",
]

# Narrow, platform-specific or near-duplicate entries left out of the default
# (bundled) corpus to keep it around 300 chunks.  An id excludes its members
# too ("pathlib.PosixPath" also drops "pathlib.PosixPath.*").  ``--all`` keeps
# everything.
DEFAULT_EXCLUDE = {
    "base64.a85decode", "base64.a85encode", "base64.b85decode", "base64.b85encode",
    "base64.b16decode", "base64.b16encode", "base64.b32hexdecode", "base64.b32hexencode",
    "collections.ChainMap.fromkeys", "collections.Counter.copy",
    "collections.OrderedDict.clear", "collections.OrderedDict.copy",
    "collections.UserList", "collections.UserString", "collections.defaultdict.copy",
    "csv.excel_tab", "csv.unix_dialect", "csv.unregister_dialect",
    "datetime.date.ctime", "datetime.date.fromordinal", "datetime.date.toordinal",
    "datetime.datetime.dst", "datetime.datetime.timetz", "datetime.datetime.tzname",
    "datetime.datetime.utcoffset", "datetime.datetime.utctimetuple",
    "datetime.time.dst", "datetime.time.tzname", "datetime.time.utcoffset",
    "datetime.timezone.dst", "datetime.timezone.fromutc", "datetime.tzinfo.dst",
    "datetime.tzinfo.tzname", "datetime.tzinfo.utcoffset",
    "hashlib.blake2s", "hashlib.sha224", "hashlib.sha384", "hashlib.sha3_224",
    "hashlib.sha3_384", "hashlib.shake_128", "hashlib.shake_256",
    "os.path.normcase", "os.path.sameopenfile", "os.path.samestat", "os.path.splitdrive",
    "pathlib.Path.is_block_device", "pathlib.Path.is_char_device", "pathlib.Path.is_fifo",
    "pathlib.Path.is_socket", "pathlib.Path.lchmod", "pathlib.Path.link_to",
    "pathlib.PosixPath", "pathlib.PurePath.anchor", "pathlib.PurePath.drive",
    "pathlib.PurePath.is_reserved", "pathlib.PurePath.root", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath", "pathlib.WindowsPath",
    "re.Match.endpos", "re.Match.lastindex", "re.Match.pos", "re.Match.re",
    "re.Match.string", "re.Pattern.flags", "re.Pattern.groups", "re.Pattern.pattern",
    "re.template",
    "shutil.ExecError", "shutil.get_unpack_formats", "shutil.register_unpack_format",
    "shutil.unregister_unpack_format",
    "subprocess.CalledProcessError.stdout",
    "tempfile.gettempdirb", "tempfile.gettempprefix", "tempfile.gettempprefixb",
}


def _excluded(qid: str, exclude: set[str]) -> bool:
    parts = qid.split(".")
    return any(".".join(parts[:i]) in exclude for i in range(1, len(parts) + 1))


# Extra modules used by ``--all`` (the large benchmark corpus).
EXTRA_MODULES = [
    "argparse",
    "logging",
    "logging.handlers",
    "asyncio",
    "email.message",
    "email.utils",
    "email.parser",
    "email.mime.text",
    "email.mime.multipart",
    "http.client",
    "http.server",
    "http.cookies",
    "urllib.parse",
    "urllib.request",
    "xml.etree.ElementTree",
    "xml.dom.minidom",
    "html",
    "html.parser",
    "unittest",
    "unittest.mock",
    "typing",
    "decimal",
    "fractions",
    "statistics",
    "zipfile",
    "tarfile",
    "gzip",
    "bz2",
    "lzma",
    "zlib",
    "sqlite3",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "queue",
    "sched",
    "multiprocessing",
    "concurrent.futures",
    "io",
    "os",
    "stat",
    "filecmp",
    "random",
    "secrets",
    "math",
    "cmath",
    "operator",
    "enum",
    "dataclasses",
    "contextlib",
    "inspect",
    "ast",
    "tokenize",
    "dis",
    "difflib",
    "pprint",
    "reprlib",
    "copy",
    "pickle",
    "shelve",
    "struct",
    "array",
    "weakref",
    "types",
    "abc",
    "numbers",
    "time",
    "calendar",
    "zoneinfo",
    "locale",
    "gettext",
    "codecs",
    "unicodedata",
    "binascii",
    "hmac",
    "configparser",
    "shlex",
    "platform",
    "sys",
    "traceback",
    "warnings",
    "importlib",
    "importlib.resources",
    "importlib.metadata",
    "pkgutil",
    "timeit",
    "cProfile",
    "pstats",
    "doctest",
    "ipaddress",
    "mimetypes",
    "quopri",
    "plistlib",
    "graphlib",
    "getpass",
    "optparse",
    "cmd",
    "code",
    "netrc",
    "smtplib",
    "ftplib",
    "wsgiref.simple_server",
    "xmlrpc.client",
    "mailbox",
    "signal",
    "atexit",
    "gc",
    "builtins",
]

# Generic docstrings that say nothing useful about the API.
TRIVIAL_DOCS = {
    "an enumeration.",
    "initialize self. see help(type(self)) for accurate signature.",
    "create and return a new object. see help(type) for accurate signature.",
    "return repr(self).",
    "return str(self).",
    "helper for pickle.",
    "implement delattr(self, name).",
    "default object formatter.",
    "size of object in memory, in bytes.",
}
TRIVIAL_PATTERNS = [
    re.compile(r"^alias for field number \d+$", re.I),
    re.compile(r"^(stub|return self)\.?$", re.I),
]

_ADDR_RE = re.compile(r" at 0x[0-9a-fA-F]+")
# Legacy C docstrings start with "name(args) -> result" or "args -> result".
_ARROW_LINE_RE = re.compile(r"^(?:[\w.]+\(.*\)|[\w\[\], ]+?)\s*-+>\s*(.*)$")
# ... or "name(args) - description".
_DASH_PREFIX_RE = re.compile(r"^[\w.]+\(.*?\)\s+-+\s+(?=\w)")
_BARE_SIG_RE = re.compile(r"^[\w.]+\(.*\)\.?$")
_CODE_LINE_RE = re.compile(r"^(\w+ = [\w.]+\(|>>> |\$ )")
_ABBREVIATIONS = {"e.g", "i.e", "eg", "ie", "etc", "vs", "cf", "approx"}


def _is_trivial(doc: str) -> bool:
    text = " ".join(doc.split()).lower()
    if len(text) < 8 or text in TRIVIAL_DOCS:
        return True
    return any(p.match(text) for p in TRIVIAL_PATTERNS)


def _signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    # Sentinel defaults print with memory addresses, and some defaults are the
    # running interpreter's path; keep output independent of the machine.
    sig = sig.replace(repr(sys.executable), "sys.executable")
    return _ADDR_RE.sub("", sig)


def _cap(doc: str, limit: int = MAX_DOC_CHARS) -> str:
    """Cap ``doc`` at about ``limit`` characters on a paragraph boundary.

    When whole paragraphs would fill less than half the budget (one huge
    paragraph), the next paragraph is cut on a line boundary instead."""
    if len(doc) <= limit:
        return doc
    paras = doc.split("\n\n")
    out: list[str] = []
    size = 0
    for p in paras:
        add = len(p) + (2 if out else 0)
        if size + add > limit:
            break
        out.append(p)
        size += add
    if size < limit // 2:
        nxt = paras[len(out)]
        lines: list[str] = []
        size += 2 if out else 0
        for line in nxt.splitlines():
            if size + len(line) + 1 > limit:
                break
            lines.append(line)
            size += len(line) + 1
        if lines:
            out.append("\n".join(lines))
        elif not out:
            out.append(nxt[:limit])
    return "\n\n".join(out) + "\n\n[...]"


def _first_sentence(text: str) -> str:
    for m in re.finditer(r"\.(?=\s|$)", text):
        word = re.search(r"([\w.]*)$", text[: m.start()]).group(1).lower()
        if word in _ABBREVIATIONS and m.end() < len(text):
            continue
        return text[: m.end()]
    return text


def _summary_lines(para: str) -> tuple[list[str], str]:
    """Lines of a paragraph with legacy signature lines removed or rewritten,
    plus a fallback text taken from a dropped "f(x) -> result" line."""
    lines = para.splitlines()
    if not lines or lines[0].startswith((" ", "\t")) or _CODE_LINE_RE.match(lines[0]):
        return [], ""  # code example or indented block
    out, fallback = list(lines), ""
    while out:
        first = out[0].strip()
        if _BARE_SIG_RE.match(first):
            out.pop(0)  # "name(args)" alone
            continue
        m = _ARROW_LINE_RE.match(first)
        if not m:
            break
        rest = m.group(1).strip()
        head = _first_sentence(rest)
        if len(head.split()) <= 3 and len(head) < len(rest):
            rest = rest[len(head):].strip()  # "f() -> None.  Do something."
        rest = re.sub(r"^\w{1,3}, (?=\w)", "", rest)  # "-> v, remove key ..."
        if len(rest.split()) > 3:  # "f(x) -> do something useful ..."
            out[0] = rest
            break
        fallback = fallback or rest
        out.pop(0)  # "f(x) -> str" carries no description
    if out:
        out[0] = _DASH_PREFIX_RE.sub("", out[0].strip())
    return out, fallback


def _summary(doc: str) -> str:
    paras = [p for p in doc.split("\n\n") if p.strip()]
    text = fallback = ""
    for p in paras:
        lines, fb = _summary_lines(p)
        fallback = fallback or fb
        if lines:
            text = " ".join(" ".join(lines).split())
            break
    if not text:  # nothing but signature lines
        text = fallback or (paras[0].strip().splitlines()[0].strip() if paras else "")
    text = _first_sentence(text)
    if text[:1].islower() and not re.match(r"^[a-z]\w*[(._]", text):
        text = text[0].upper() + text[1:]
    if len(text) > 200:
        text = text[:197].rsplit(" ", 1)[0] + "..."
    return text


def _public_names(mod) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is not None:
        return sorted(n for n in set(names) if not n.startswith("_") and hasattr(mod, n))
    base = mod.__name__.split(".")[-1]
    owners = {mod.__name__, "_" + base, base}
    out = []
    for n in dir(mod):
        if n.startswith("_"):
            continue
        obj = getattr(mod, n)
        owner = getattr(obj, "__module__", None)
        if owner in owners or (owner and owner.startswith(mod.__name__ + ".")):
            out.append(n)
    return sorted(out)


def _member_kind(raw):
    """Classify an entry of a class __dict__; return (kind, callable) or None."""
    if isinstance(raw, (staticmethod, classmethod)):
        return "method", raw.__func__
    if isinstance(raw, property):
        return "property", raw
    if inspect.isfunction(raw) or inspect.ismethoddescriptor(raw) or inspect.isbuiltin(raw):
        return "method", raw
    if inspect.isdatadescriptor(raw) and getattr(raw, "__doc__", None):
        return "property", raw
    return None


def _candidates(modname: str):
    """Yield (id, kind, header, raw_doc) for the public API of one module."""
    mod = importlib.import_module(modname)
    for name in _public_names(mod):
        obj = getattr(mod, name)
        qual = f"{modname}.{name}"
        if inspect.isclass(obj):
            yield qual, "class", qual + _signature(obj), obj.__dict__.get("__doc__")
            for mname in sorted(obj.__dict__):
                if mname.startswith("_"):
                    continue
                kind_fn = _member_kind(obj.__dict__[mname])
                if kind_fn is None:
                    continue
                kind, fn = kind_fn
                mqual = f"{qual}.{mname}"
                if kind == "property":
                    yield mqual, "method", mqual + " (property)", fn.__doc__
                else:
                    yield mqual, "method", mqual + _signature(fn), getattr(fn, "__doc__", None)
        elif callable(obj) and (inspect.isroutine(obj) or isinstance(obj, type(len))
                                or hasattr(obj, "__wrapped__")):
            yield qual, "function", qual + _signature(obj), getattr(obj, "__doc__", None)


def build(modules: list[str], stats: dict | None = None,
          exclude: set[str] | frozenset = frozenset()) -> list[dict]:
    stats = stats if stats is not None else {}
    stats.update(empty=0, trivial=0, duplicate=0, duplicate_id=0)
    raw: dict[str, tuple] = {}
    for modname in modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cands = list(_candidates(modname))
            except ImportError as exc:
                print(f"skipping {modname}: {exc}", file=sys.stderr)
                continue
        for qid, kind, header, doc in cands:
            if exclude and _excluded(qid, exclude):
                continue
            if qid in raw:
                stats["duplicate_id"] += 1
                continue
            raw[qid] = (modname, kind, header, doc)

    chunks, seen_docs = [], set()
    for qid in sorted(raw):
        modname, kind, header, doc = raw[qid]
        if not isinstance(doc, str) or not doc.strip():
            stats["empty"] += 1
            continue
        doc = inspect.cleandoc(doc).strip()
        if _is_trivial(doc):
            stats["trivial"] += 1
            continue
        if doc in seen_docs:
            stats["duplicate"] += 1
            continue
        seen_docs.add(doc)
        summary = _summary(doc)
        if not summary:
            stats["empty"] += 1
            continue
        chunks.append({
            "id": qid,
            "content": f"{header}\n\n{_cap(doc)}",
            "summary": summary,
            "module": modname,
            "kind": kind,
            "source": SOURCE,
        })
    return chunks


def cap_chunks(chunks: list[dict], n: int) -> list[dict]:
    """Keep at most n chunks, taking them round-robin across modules."""
    if n <= 0 or len(chunks) <= n:
        return chunks
    by_mod: dict[str, list[dict]] = {}
    for c in chunks:
        by_mod.setdefault(c["module"], []).append(c)
    queues = [by_mod[m] for m in sorted(by_mod)]
    picked: list[dict] = []
    i = 0
    while len(picked) < n:
        took = False
        for q in queues:
            if i < len(q) and len(picked) < n:
                picked.append(q[i])
                took = True
        if not took:
            break
        i += 1
    return sorted(picked, key=lambda c: c["id"])


def write(chunks: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        text = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chunks)
    elif out.suffix == ".json":
        text = json.dumps(chunks, indent=1, ensure_ascii=False) + "\n"
    else:
        raise SystemExit(f"--out must end in .json or .jsonl, got {out}")
    out.write_text(text, encoding="utf-8")


def load_chunks(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def validate_chunks(chunks: list[dict]) -> list[str]:
    errors, ids = [], set()
    for i, c in enumerate(chunks):
        cid = c.get("id")
        if not isinstance(cid, str) or not cid:
            errors.append(f"chunk {i}: missing id")
        elif cid in ids:
            errors.append(f"chunk {i}: duplicate id {cid}")
        ids.add(cid)
        for key in ("content", "summary", "module", "kind", "source"):
            if not isinstance(c.get(key), str) or not c[key].strip():
                errors.append(f"chunk {cid}: empty {key}")
        if c.get("kind") not in ("function", "class", "method"):
            errors.append(f"chunk {cid}: bad kind {c.get('kind')!r}")
    if [c.get("id") for c in chunks] != sorted(c.get("id") for c in chunks):
        errors.append("chunks are not sorted by id")
    return errors


def check_queries(qpath: Path, ids: set[str], texts: dict[str, str] | None = None,
                  referenced: set[str] | None = None) -> list[str]:
    """Check a queries.jsonl ("relevant": [...]) or pairs.jsonl ("positive_id").

    ``texts`` (query text -> file) is shared between files so that a query
    repeated across files (e.g. a training pair copying an evaluation query)
    is reported; ``referenced`` collects the ids the file points at."""
    errors, qids = [], set()
    texts = texts if texts is not None else {}
    referenced = referenced if referenced is not None else set()
    for n, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        q = rec.get("query")
        if not isinstance(q, str) or not q.strip():
            errors.append(f"{qpath}:{n}: empty query")
        elif " ".join(q.lower().split()) in texts:
            errors.append(f"{qpath}:{n}: query {q!r} already in "
                          f"{texts[' '.join(q.lower().split())]}")
        else:
            texts[" ".join(q.lower().split())] = str(qpath)
        if "query_id" in rec:
            if rec["query_id"] in qids:
                errors.append(f"{qpath}:{n}: duplicate query_id {rec['query_id']}")
            qids.add(rec["query_id"])
        if "relevant" in rec:
            refs = rec["relevant"]
            if not isinstance(refs, list) or not refs:
                errors.append(f"{qpath}:{n}: 'relevant' must be a non-empty list")
                refs = []
        elif "positive_id" in rec:
            refs = [rec["positive_id"]]
        else:
            errors.append(f"{qpath}:{n}: no 'relevant' or 'positive_id'")
            refs = []
        referenced.update(refs)
        for r in refs:
            if r not in ids:
                errors.append(f"{qpath}:{n}: unknown chunk id {r!r}")
    return errors


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="output file (.json array or .jsonl)")
    ap.add_argument("--max-chunks", type=int, default=DEFAULT_MAX_CHUNKS,
                    help=f"cap on the number of chunks (default {DEFAULT_MAX_CHUNKS}; "
                         "taken round-robin across modules); ignored with --all")
    ap.add_argument("--all", action="store_true",
                    help="use many more modules and no cap (>= 2,500 chunks)")
    ap.add_argument("--check-queries", type=Path, action="append", default=[],
                    metavar="PATH",
                    help="verify that every id referenced in PATH (queries.jsonl with "
                         "'relevant' or pairs.jsonl with 'positive_id') exists in the "
                         "corpus (--corpus, default data/example/chunks.json); repeatable")
    ap.add_argument("--corpus", type=Path, default=here / "chunks.json",
                    help="corpus used by --check-queries when --out is not given")
    args = ap.parse_args(argv)

    if not args.out and not args.check_queries:
        ap.error("give --out and/or --check-queries")

    if args.out and args.out.suffix not in (".json", ".jsonl"):
        ap.error(f"--out must end in .json or .jsonl, got {args.out}")

    status = 0
    if args.out:
        stats: dict = {}
        modules = DEFAULT_MODULES + (EXTRA_MODULES if args.all else [])
        chunks = build(modules, stats, set() if args.all else DEFAULT_EXCLUDE)
        if not args.all:
            chunks = cap_chunks(chunks, args.max_chunks)
        errors = validate_chunks(chunks)
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        write(chunks, args.out)
        print(f"wrote {len(chunks)} chunks from {len({c['module'] for c in chunks})} "
              f"modules to {args.out} ({args.out.stat().st_size} bytes); skipped "
              f"{stats['empty']} empty, {stats['trivial']} trivial, "
              f"{stats['duplicate']} duplicate docstrings", file=sys.stderr)

    if args.check_queries:
        corpus = args.out if args.out else args.corpus
        chunks = load_chunks(corpus)
        errors = validate_chunks(chunks)
        ids = {c["id"] for c in chunks}
        texts: dict[str, str] = {}
        refs_by_file: dict[Path, set[str]] = {}
        for qpath in args.check_queries:
            refs_by_file[qpath] = set()
            errs = check_queries(qpath, ids, texts, refs_by_file[qpath])
            n = sum(1 for line in qpath.read_text(encoding="utf-8").splitlines() if line.strip())
            print(f"{qpath}: {n} records, {len(refs_by_file[qpath])} distinct ids, "
                  f"{len(errs)} problems (corpus {corpus}, {len(ids)} chunks)", file=sys.stderr)
            errors += errs
        files = list(refs_by_file)
        for i, a in enumerate(files):
            for b in files[i + 1:]:
                shared = refs_by_file[a] & refs_by_file[b]
                print(f"note: {len(shared)} ids referenced by both {a} and {b}",
                      file=sys.stderr)
        if errors:
            print("\n".join(errors), file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
