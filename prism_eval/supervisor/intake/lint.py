"""Supervisor: the AST lint, a fast and friendly first pass over every `.py` file of a bundle.

It is NOT the security boundary (the sandboxed workers are, docs/design.md §2–3): it catches the
honest mistake and the lazy attack early, with a stable rule id, a line and a fix, and it accepts
ordinary honest code (`math`, `functools`, `einops`, `torch.nn`, `os.environ.get` …). Rules are
data: dotted names in `REFERENCES` (fnmatch patterns, matched against a name and its prefixes,
after import aliases are resolved) and a few structural checks in `_FileLinter`.

One idea: the lint's rules beside the one visitor that applies them, so that a rule and its
check are read together (a new rule is a line in `REFERENCES` or a method here).
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from prism_eval.errors import Rejected
from prism_eval.supervisor.intake.bundle import Bundle
from prism_eval.supervisor.intake.contract import Contract

_MAX_EVIDENCE = 50


class LintFinding(BaseModel):
    """One lint hit: where, which rule, why, and how to fix it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str = Field(description="Stable rule id, `lint.<name>`.")
    path: str = Field(description="Bundle file the finding is in.")
    line: int = Field(ge=0, description="1-based line (0 when unknown).")
    col: int = Field(ge=0, description="1-based column (0 when unknown).")
    message: str = Field(description="What was found and why it is not allowed.")
    hint: str = Field(description="How to fix it.")


@dataclass(frozen=True)
class Rule:
    """A lint rule's one-line explanation and fix."""

    explanation: str
    hint: str


RULES: dict[str, Rule] = {
    "lint.process": Rule(
        "starts or signals processes, which workers may not do",
        "do the work in-process; multi-rank runs are launched by the evaluator",
    ),
    "lint.network": Rule(
        "uses the network, which scored runs do not have",
        "remove it; data comes from ctx.iter_train_batches",
    ),
    "lint.ffi": Rule("loads native code", "use torch operations instead of native extensions"),
    "lint.deserialization": Rule(
        "unpickles data, which runs arbitrary code",
        "rebuild state from code, or use safetensors",
    ),
    "lint.introspection": Rule(
        "reaches into the interpreter (frames, the object graph, the import system)",
        "use plain imports and attributes; inspect.signature and gc.collect are fine",
    ),
    "lint.dynamic_code": Rule(
        "runs code built at run time", "write the code out as ordinary Python"
    ),
    "lint.file_access": Rule(
        "touches the file system in a way the sandbox refuses, or opens files while building "
        "the model",
        "build the model from code alone; the training loop may write under ctx.artifacts_dir",
    ),
    "lint.dunder_access": Rule(
        "walks interpreter internals through special attributes",
        "use the public attributes of your own objects",
    ),
    "lint.dynamic_getattr": Rule(
        "looks up a module attribute by a computed name",
        "name the attribute directly, e.g. nn.GELU instead of getattr(nn, name)",
    ),
    "lint.monkeypatch": Rule(
        "replaces an attribute of a library module or class",
        "subclass or wrap it in your own code instead of patching the library",
    ),
    "lint.imports_training": Rule(
        "makes the architecture import the training script, which the referee never loads",
        "move shared code into a helper module that both scripts import",
    ),
    "lint.syntax_error": Rule("is not valid Python", "check it with `python -m py_compile`"),
    "lint.embedded_data": Rule(
        "looks like embedded data; bundles learn from scratch, so they may not carry weights, "
        "tables or encoded text",
        "compute it in code or remove it (what a bundle carries is bounded and shown as "
        "compressed_bytes in every record)",
    ),
}

_NAMES_BY_RULE: dict[str, tuple[str, ...]] = {
    "lint.process": (
        "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty",
        "signal.pthread_kill", "signal.pidfd_send_signal", "torch.multiprocessing",
        "asyncio.subprocess", "asyncio.create_subprocess_*", "os.system", "os.popen", "os.exec*",
        "os.spawn*", "os.posix_spawn*", "os.fork*", "os.kill*", "os._exit", "os.abort",
        "os.putenv", "os.unsetenv", "os.set*id",
    ),
    "lint.network": (
        "socket", "_socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp",
        "ftplib", "smtplib", "telnetlib", "poplib", "imaplib", "nntplib", "xmlrpc",
        "socketserver", "websocket", "websockets", "paramiko", "webbrowser", "torch.hub",
        "asyncio.open_connection", "asyncio.start_server", "huggingface_hub", "datasets",
    ),
    "lint.ffi": (
        "ctypes", "_ctypes", "cffi", "_cffi_backend", "torch.ops.load_library",
        "torch.classes.load_library", "torch.utils.cpp_extension",
    ),
    "lint.deserialization": (
        "pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "joblib",
        "copyreg", "torch.load", "torch.jit.load", "torch.package", "torch.serialization",
    ),
    # Frame walking, the object graph and the import machinery; not inspect.signature, not
    # gc.collect, not importlib.util.find_spec (honest code uses them).
    "lint.introspection": (
        "inspect.currentframe", "inspect.stack", "inspect.trace", "inspect.getouterframes",
        "inspect.getinnerframes", "inspect.getframeinfo", "inspect.getgeneratorlocals",
        "inspect.getcoroutinelocals", "inspect.getclosurevars", "gc.get_objects",
        "gc.get_referrers", "gc.get_referents", "gc.callbacks", "importlib.import_module",
        "importlib.reload", "importlib.__import__", "importlib.util.spec_from_*",
        "importlib.util.module_from_spec", "importlib.machinery", "importlib.abc", "imp",
        "builtins", "__builtin__", "code", "codeop", "runpy", "zipimport", "pkgutil",
        "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
        "sys.addaudithook", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache",
        "sys.modules.update", "sys.modules.pop*", "sys.modules.setdefault", "sys.modules.clear",
        "sys.modules.__setitem__", "sys.modules.__delitem__", "threading.settrace",
        "threading.setprofile", "types.CodeType", "types.FunctionType",
    ),
    # What the sandbox refuses anyway (devices, links, ownership, raw descriptors); reading and
    # writing ordinary files is the sandbox's business, not the lint's.
    "lint.file_access": (
        "os.open", "os.fdopen", "os.link", "os.symlink", "os.chmod", "os.chown", "os.lchown",
        "os.mknod", "os.mkfifo", "os.memfd_create", "os.chroot", "torch.from_file",
        "torch.*.from_file",
    ),
}  # fmt: skip
REFERENCES: tuple[tuple[str, str], ...] = tuple(
    (pattern, rule_id) for rule_id, patterns in _NAMES_BY_RULE.items() for pattern in patterns
)
_EXACT = {pattern: rule_id for pattern, rule_id in REFERENCES if "*" not in pattern}
_WILD = [(pattern, rule_id) for pattern, rule_id in REFERENCES if "*" in pattern]
BUILTINS: dict[str, str] = {
    "eval": "lint.dynamic_code",
    "exec": "lint.dynamic_code",
    "compile": "lint.dynamic_code",
    "__import__": "lint.dynamic_code",
    "breakpoint": "lint.dynamic_code",
    "open": "lint.file_access",
    "__builtins__": "lint.dunder_access",
}
DUNDERS = frozenset(
    {
        "__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__", "__bases__",
        "__base__", "__mro__", "__reduce__", "__reduce_ex__", "__loader__", "__spec__",
        "__import__", "__self__", "__defaults__", "__kwdefaults__", "f_globals", "f_locals",
        "f_builtins", "f_back", "tb_frame", "gi_frame", "cr_frame", "ag_frame", "co_code",
    }
)  # fmt: skip
_MODULE_DUNDERS = frozenset({"__dict__", "__getattribute__"})  # flagged on imported names only
# Library settings a training script may assign (TF32, cudnn, the compiler): not monkeypatching.
SETTINGS = ("torch.backends.*", "torch._dynamo.config.*", "torch._inductor.config.*")
# Data-like literals: far beyond what honest code holds (a long docstring has spaces; a table of
# a few hundred numbers is already rare), far below what a useful pretrained table needs.
DENSE_TEXT_CHARS = 2048  # a string this long with under 2 % whitespace: base64, hex, a blob
MAX_TEXT_CHARS = 32 * 1024  # any string, or the strings of one literal together
MAX_NUMBERS = 512  # numeric constants in one list, tuple, set or dict literal
_CONTAINERS = ast.List | ast.Tuple | ast.Set | ast.Dict


@functools.lru_cache(maxsize=4096)
def match_reference(name: str) -> str | None:
    """Return the rule id a dotted name falls under (it or any of its prefixes), else None."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in _EXACT:
            return _EXACT[prefix]
        for pattern, rule_id in _WILD:
            if fnmatchcase(prefix, pattern):
                return rule_id
    return None


def embedded_data(node: ast.AST) -> str | None:
    """Describe a literal that looks like data rather than code, else None."""
    if isinstance(node, ast.Constant):
        value = node.value
        if not isinstance(value, str | bytes):
            return None
        text = value if isinstance(value, str) else value.decode("latin-1")
        spaces = sum(text.count(c) for c in " \n\t")
        dense = len(text) >= DENSE_TEXT_CHARS and spaces < 0.02 * len(text)
        if dense or len(text) > MAX_TEXT_CHARS:
            return f"a {len(text):,}-character {type(value).__name__} literal"
        return None
    numbers = chars = 0
    for item in ast.walk(node):
        if isinstance(item, ast.Constant):
            if isinstance(item.value, int | float | complex) and not isinstance(item.value, bool):
                numbers += 1
            elif isinstance(item.value, str | bytes):
                chars += len(item.value)
    if numbers >= MAX_NUMBERS:
        return f"a literal of {numbers:,} numbers"
    if chars > MAX_TEXT_CHARS:
        return f"a literal holding {chars:,} characters of strings"
    return None


def _chain(node: ast.expr) -> tuple[ast.expr, list[str]]:
    """Split `a.b.c` into its base expression and the attribute names, outermost last."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return node, attrs[::-1]


class _FileLinter:
    """Lint one parsed file; `aliases` maps local names to the dotted names they import."""

    def __init__(self, path: str, tree: ast.Module, local: frozenset[str], training: str) -> None:
        self.path = path
        self.local = local
        self.training = training
        self.findings: dict[tuple[str, int], LintFinding] = {}
        self.aliases: dict[str, str] = {}
        self._collect_aliases(tree)

    def _collect_aliases(self, tree: ast.Module) -> None:
        """Import bindings, plus names assigned exactly once from an imported dotted name."""
        aliases = self.aliases
        stores = Counter(
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and type(n.ctx) is ast.Store
        )
        for node in ast.walk(tree):
            for name, dotted, _ in self._import_bindings(node):
                aliases[name] = dotted
        for _ in range(3):  # a few rounds resolve `t = torch; nn = t.nn`
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], self.qualname(node.value)
                    if isinstance(target, ast.Name) and value and stores[target.id] == 1:
                        aliases.setdefault(target.id, value)

    def _import_bindings(self, node: ast.AST) -> Iterator[tuple[str, str, str]]:
        """Yield (bound name, dotted name it stands for, dotted name imported); skip locals."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in self.local:
                    bound = alias.asname or alias.name.split(".")[0]
                    yield bound, alias.name if alias.asname else bound, alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names if node.module.split(".")[0] not in self.local else ():
                full = f"{node.module}.{alias.name}"
                yield alias.asname or alias.name, full, full

    def qualname(self, node: ast.expr) -> str | None:
        """The dotted name an expression refers to, when its root is an imported name."""
        base, attrs = _chain(node)
        if not isinstance(base, ast.Name) or base.id not in self.aliases:
            return None
        return ".".join([self.aliases[base.id], *attrs])

    def add(self, rule_id: str, node: ast.AST, what: str) -> None:
        """Record one finding; the same rule on the same line is reported once."""
        line = getattr(node, "lineno", 0)
        self.findings.setdefault(
            (rule_id, line),
            LintFinding(
                rule_id=rule_id,
                path=self.path,
                line=line,
                col=getattr(node, "col_offset", -1) + 1,
                message=f"{what} {RULES[rule_id].explanation}",
                hint=RULES[rule_id].hint,
            ),
        )

    def run(self, tree: ast.Module) -> list[LintFinding]:
        """Walk the tree iteratively (hostile code may nest deeper than the C stack allows)."""
        stack: list[ast.AST] = [tree]
        while stack:
            stack.extend(self._visit(stack.pop()))
        return list(self.findings.values())

    def _visit(self, node: ast.AST) -> Iterable[ast.AST]:
        """Check one node; return the children still to visit."""
        if isinstance(node, ast.Import | ast.ImportFrom):
            self._check_import(node)
            return ()
        if isinstance(node, ast.Attribute | ast.Name):
            return self._check_reference(node)
        if isinstance(node, _CONTAINERS | ast.Constant):
            found = embedded_data(node)
            if found:
                self.add("lint.embedded_data", node, found)
                return ()
        if isinstance(node, ast.Call):
            self._check_call(node)
        elif isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load):
            if self.qualname(node.value) == "sys.modules":
                self.add("lint.introspection", node, "writing sys.modules")
        elif isinstance(node, ast.Constant) and node.value in DUNDERS:
            self.add("lint.dunder_access", node, f"the string {node.value!r}")
        return ast.iter_child_nodes(node)

    def _check_import(self, node: ast.Import | ast.ImportFrom) -> None:
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        training = self.training.removesuffix(".py").replace("/", ".")
        if self.path != self.training and training in modules and not getattr(node, "level", 0):
            self.add("lint.imports_training", node, f"`import {training}`")
        for name, _, imported in self._import_bindings(node):
            rule_id = match_reference(imported)
            if rule_id:
                alias = f" as `{name}`" if name != imported.split(".")[-1] else ""
                self.add(rule_id, node, f"importing `{imported}`{alias}")

    def _check_reference(self, node: ast.Attribute | ast.Name) -> Iterable[ast.AST]:
        base, attrs = _chain(node)
        qualname = self.qualname(node)
        for attr in attrs:
            if attr in DUNDERS or (attr in _MODULE_DUNDERS and qualname):
                self.add("lint.dunder_access", node, f"`.{attr}`")
        if isinstance(base, ast.Name) and base.id not in self.aliases:
            # The training loop may write its own files (under ctx.artifacts_dir, which the
            # sandbox enforces); the architecture stays pure.
            writes_own_files = base.id == "open" and self.path == self.training
            if base.id in BUILTINS and isinstance(base.ctx, ast.Load) and not writes_own_files:
                self.add(BUILTINS[base.id], node, f"`{base.id}`")
        elif qualname and isinstance(node.ctx, ast.Load):
            rule_id = match_reference(qualname)
            if rule_id:
                self.add(rule_id, node, f"`{qualname}`")
        elif qualname and attrs and not any(fnmatchcase(qualname, p) for p in SETTINGS):
            self.add("lint.monkeypatch", node, f"assigning `{qualname}`")
        return () if isinstance(base, ast.Name) else (base,)

    def _check_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id not in self.aliases and node.args:
            target = self.qualname(node.args[0])
            if func.id in ("setattr", "delattr") and target:
                self.add("lint.monkeypatch", node, f"`{func.id}` on `{target}`")
            elif func.id == "getattr" and target:
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    rule_id = match_reference(f"{target}.{name.value}")
                    if rule_id:
                        self.add(rule_id, node, f"`{target}.{name.value}`")
                else:
                    self.add("lint.dynamic_getattr", node, f"`getattr({target}, …)`")
        if self.qualname(func) == "numpy.load":
            for keyword in node.keywords:
                literal_false = isinstance(keyword.value, ast.Constant) and not keyword.value.value
                if keyword.arg == "allow_pickle" and not literal_false:
                    self.add("lint.deserialization", node, "`numpy.load(allow_pickle=...)`")


def lint_bundle(bundle: Bundle, contract: Contract) -> list[LintFinding]:
    """Lint every `.py` file of the bundle; findings sorted by (path, line, col)."""
    scripts = [f.path for f in bundle.files if f.path.endswith(".py")]
    local = frozenset(p.split("/")[0].removesuffix(".py") for p in scripts)
    findings: list[LintFinding] = []
    for path in scripts:
        try:
            tree = ast.parse(bundle.read_text(path), filename=path)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            line = getattr(exc, "lineno", None) or 0
            findings.append(
                LintFinding(
                    rule_id="lint.syntax_error",
                    path=path,
                    line=line,
                    col=getattr(exc, "offset", None) or 0,
                    message=f"{path} {RULES['lint.syntax_error'].explanation}: {exc}",
                    hint=RULES["lint.syntax_error"].hint,
                )
            )
            continue
        findings.extend(_FileLinter(path, tree, local, contract.training_path).run(tree))
    return sorted(findings, key=lambda f: (f.path, f.line, f.col, f.rule_id))


def raise_on_findings(findings: list[LintFinding]) -> None:
    """Raise `Rejected` naming the first finding and listing up to 50 as evidence."""
    if not findings:
        return
    first = findings[0]
    raise Rejected(
        first.rule_id,
        f"{len(findings)} lint finding(s); first: {first.path}:{first.line}: {first.message}",
        hint=first.hint,
        evidence=[
            f"{f.path}:{f.line}:{f.col} {f.rule_id} {f.message} ({f.hint})"
            for f in findings[:_MAX_EVIDENCE]
        ],
    )
