"""Write the code that follows from the typed models and from ``AsyncClient``.

Each typed model is declared once: a pydantic ``*Params`` class in ``src/oxen_queue/_params.py``,
registered in its ``_TYPED`` mapping (model id -> class). Everything that must repeat it follows
from it, written by this script (as httpcore keeps its sync code with ``unasync``):

1. ``src/oxen_queue/_options.py``: one ``*Options`` TypedDict per typed model, the keyword
   arguments ``enqueue`` and ``generate`` take as ``**params``: the model's optional fields (their
   annotations as ``_params.py`` writes them; ``X | None = None`` reduced to ``X``, since a key
   left out means none and ``None`` is refused) and the queue's fields (``QUEUE_FIELDS``), with a
   docstring that lists the defaults.
2. The overloads of the methods whose class body holds a region between the marker comments
   ``# --- begin generated: overloads of NAME ...`` and ``# --- end generated: ...``: one per
   typed model (its required fields become keyword parameters), then the catch-all
   ``model: str``, each with the implementation's other parameters (the ``def NAME`` after the
   region); and the ``from ._options import ...`` line of that module.
3. ``src/oxen_queue/_sync_client.py``: the blocking ``Client``, from ``AsyncClient``'s public
   surface read by introspection (every public method and property along its MRO, each one's
   annotations and defaults taken from its source with ``ast``), with the handle types mapped to
   their blocking forms (:data:`RETURNS`, :func:`_blocking_argument`). Each method delegates to
   the ``AsyncClient`` through the hand-written runtime of ``_sync.py``.

Steps 1 and 2 read source only, so that a stale ``_options.py`` never stops the package from
being imported for step 3.

Run ``uv run python .ci/codegen.py`` after changing ``_params.py`` or ``AsyncClient``.
``--check`` writes nothing and exits 1 with a diff when any generated code is stale (CI runs it,
and so does ``tests/test_codegen.py``). The output is formatted with the project's ruff; a file
that differs only as another ruff version formats it counts as current.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import inspect
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

PACKAGE: Final = "oxen_queue"
SCRIPT: Final = ".ci/codegen.py"
LINE_LENGTH: Final = 100  # pyproject.toml's [tool.ruff] line-length, for rewrapped docstrings

BEGIN: Final = re.compile(
    r"^(?P<indent>[ \t]*)# --- begin generated: overloads of (?P<name>\w+)\b.*$"
)
END: Final = re.compile(r"^[ \t]*# --- end generated: overloads of (?P<name>\w+)\b.*$")

# The queue's own fields (``QUEUE_FIELDS``) are strings: ``validate_params`` refuses anything else.
QUEUE_FIELD_ANNOTATION: Final = "str"

# AsyncClient's types that have a blocking form: in a return annotation, the annotation as the
# blocking client writes it and the expression that converts the AsyncClient's value ``{}``.
RETURNS: Final = {
    "Generation": ("SyncGeneration", "SyncGeneration(self._bridge, {})"),
    "list[Generation]": (
        "list[SyncGeneration]",
        "[SyncGeneration(self._bridge, generation) for generation in {}]",
    ),
    "Mapping[str, Generation]": (
        "Mapping[str, SyncGeneration]",
        "SyncGenerationMap(self._bridge, {})",
    ),
    "GenerationHistory": ("SyncGenerationHistory", "SyncGenerationHistory(self._bridge, {})"),
    "AsyncClient": ("Client", "self._view({})"),
}
ASYNC_ONLY: Final = frozenset({"Generation", "GenerationHistory", "AsyncClient"})

# Parameters whose annotation names one of these are callbacks: the AsyncClient calls them on
# its event loop, which is the blocking client's own thread, not its caller's. The blocking
# client does not take them (each must have a default).
CALLBACK_TYPES: Final = frozenset({"Callable", "ProgressCallback"})

# The runtime the generated Client delegates to, and names the templates write.
TEMPLATE_NAMES: Final = {
    "Bridge": f"{PACKAGE}._sync",
    "SyncGeneration": f"{PACKAGE}._sync",
    "SyncGenerationHistory": f"{PACKAGE}._sync",
    "SyncGenerationMap": f"{PACKAGE}._sync",
    "unwrap": f"{PACKAGE}._sync",
    "Literal": "typing",
    "Self": "typing",
    "Unpack": "typing",
    "overload": "typing",
}

# What the blocking client adds to a method's docstring (by the blocking client's name).
BLOCKING_NOTES: Final = {
    "close": "It closes the client's views too, and stops its event loop thread.",
    "generate": "Ctrl-C cancels the job upstream (as does a cancelled ``await``), then raises "
    "``KeyboardInterrupt``.",
    "pending": "Each lookup reads the client's current state, on its event loop.",
}

CLIENT_DOC: Final = """\
A blocking client for Oxen.ai's generation queue.

It runs an [`AsyncClient`][oxen_queue.AsyncClient] on an event loop of its own, in a daemon
thread, and takes the same arguments, with the same defaults. Use it as a context manager, or
keep it open (a notebook) and call [`close`][oxen_queue.Client.close] when done:

```python
with Client() as client:
    record = client.generate("gpt-image-2", prompt="An ox at sunset")
    client.download(record, "ox.png")
```

Its methods are AsyncClient's without ``await``, with the same parameters; a generation is
a [`SyncGeneration`][oxen_queue.SyncGeneration], the history a
[`SyncGenerationHistory`][oxen_queue.SyncGenerationHistory]. It works from a thread whose own
event loop is running (a notebook cell), since that loop is never used. Ctrl-C interrupts a
wait: the waiting task is cancelled and ``KeyboardInterrupt`` propagates."""

SECTION: Final = re.compile(
    r"^(Args|Arguments|Attributes|Example|Examples|Note|Notes|Raises|Returns|See Also|Warning"
    r"|Warnings|Yields):\s*$"
)
KEPT_SECTIONS: Final = ("Args", "Arguments", "Returns", "Raises")


class CodegenError(Exception):
    """Something this script cannot derive: the message says what to change."""


# -- reading source ---------------------------------------------------------------------------


def _expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def _names(node: ast.AST) -> set[str]:
    """The global names an annotation or a default reads (``httpx`` of ``httpx.Timeout``)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class ModuleNames:
    """Where each module-level name of a module comes from, read from its source: its imports
    (those under ``if TYPE_CHECKING:`` included) and its own definitions."""

    def __init__(self, path: Path, module: str, *, is_package: bool = False) -> None:
        self.module = module
        self.tree = ast.parse(path.read_text(), filename=str(path))
        package = module if is_package else module.rpartition(".")[0]
        self.origins: dict[str, tuple[str, str | None]] = {}
        for node in self._module_level(self.tree.body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.origins[alias.asname] = (alias.name, None)
                    else:
                        root = alias.name.partition(".")[0]
                        self.origins[root] = (root, None)
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, source] if source else base)
                for alias in node.names:
                    self.origins[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                self.origins[node.name] = (module, node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.origins[target.id] = (module, target.id)

    @staticmethod
    def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in body:
            if isinstance(node, ast.If):  # if TYPE_CHECKING: ... (and else)
                yield from ModuleNames._module_level(node.body)
                yield from ModuleNames._module_level(node.orelse)
            elif isinstance(node, ast.Try):
                yield from ModuleNames._module_level(node.body)
            else:
                yield node

    def resolve(self, names: Iterable[str], where: str) -> dict[str, tuple[str, str | None]]:
        """The origin of each name that is not a builtin.

        Raises:
            CodegenError: A name the module neither defines nor imports.
        """
        resolved = {}
        for name in names:
            if name in self.origins:
                resolved[name] = self.origins[name]
            elif not hasattr(builtins, name):
                raise CodegenError(f"{where}: {name!r} is not defined or imported in {self.module}")
        return resolved


@dataclass(frozen=True)
class ModelField:
    """A field of a typed model, as its ``*Params`` class declares it."""

    name: str
    annotation: ast.expr
    default: ast.expr | None  # None: required

    @property
    def option_annotation(self) -> str:
        """The annotation in the options: ``X | None = None`` is ``X`` (leave the key out)."""
        annotation = self.annotation
        if _is_none(self.default):
            members = [m for m in _union_members(annotation) if not _is_none(m)]
            annotation = members[0]
            for member in members[1:]:
                annotation = ast.BinOp(annotation, ast.BitOr(), member)
        return ast.unparse(annotation)

    @property
    def described_default(self) -> str:
        if self.default is None or _is_none(self.default):
            return f"no ``{self.name}``"
        value = self.default
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            text = '"' + value.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = ast.unparse(value)
        return f"``{self.name}={text}``"


def _is_none(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _union_members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_union_members(node.left), *_union_members(node.right)]
    return [node]


@dataclass(frozen=True)
class TypedModel:
    """A model with typed parameters: its id, its ``*Params`` class and that class's fields."""

    model_id: str
    params_class: str
    fields: tuple[ModelField, ...]

    @property
    def options_class(self) -> str:
        return self.params_class.removesuffix("Params") + "Options"

    @property
    def required(self) -> list[ModelField]:
        return [f for f in self.fields if f.default is None]

    @property
    def optional(self) -> list[ModelField]:
        return [f for f in self.fields if f.default is not None]


@dataclass(frozen=True)
class Models:
    """What ``_params.py`` declares: the typed models, the queue's fields, its names."""

    typed: tuple[TypedModel, ...]
    queue_fields: tuple[str, ...]
    names: ModuleNames


def read_models(src: Path) -> Models:
    """The typed models of ``_params.py`` (its ``_TYPED`` registry), read from its source.

    Raises:
        CodegenError: A registry, class or field this script cannot read.
    """
    path = src / PACKAGE / "_params.py"
    names = ModuleNames(path, f"{PACKAGE}._params")
    where = f"{path.name}"
    registry = _assigned(names.tree, "_TYPED", where)
    if not isinstance(registry, ast.Dict):
        raise CodegenError(f"{where}: _TYPED must be a dict literal (model id -> *Params class)")
    classes = {n.name: n for n in names.tree.body if isinstance(n, ast.ClassDef)}
    typed = []
    for key, value in zip(registry.keys, registry.values, strict=True):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise CodegenError(f"{where}: _TYPED's keys must be model ids (strings)")
        if not (isinstance(value, ast.Name) and value.id in classes):
            raise CodegenError(f"{where}: _TYPED[{key.value!r}] must name a class of _params.py")
        if not value.id.endswith("Params"):
            raise CodegenError(f"{where}: {value.id} must be named *Params (its options: *Options)")
        typed.append(TypedModel(key.value, value.id, _fields(classes[value.id], where)))
    queue = _assigned(names.tree, "QUEUE_FIELDS", where)
    elements = (
        queue.args[0].elts
        if isinstance(queue, ast.Call)
        and len(queue.args) == 1
        and isinstance(queue.args[0], ast.Set | ast.List | ast.Tuple)
        else None
    )
    if elements is None or not all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements
    ):
        raise CodegenError(f"{where}: QUEUE_FIELDS must be frozenset({{'name', ...}})")
    queue_fields = tuple(
        e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)
    )
    return Models(tuple(typed), queue_fields, names)


def _assigned(tree: ast.Module, name: str, where: str) -> ast.expr:
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
            and node.value is not None
        ):
            return node.value
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value
    raise CodegenError(f"{where}: no module-level {name} = ...")


def _fields(node: ast.ClassDef, where: str) -> tuple[ModelField, ...]:
    """A pydantic model's fields, with their defaults as pydantic reads them (``Field(...)``)."""
    fields = []
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        name = statement.target.id
        if name.startswith("_") or "ClassVar" in _names(statement.annotation):
            continue
        value = statement.value
        default: ast.expr | None = value
        if isinstance(value, ast.Call) and _called(value) == "Field":
            keywords = {k.arg: k.value for k in value.keywords}
            if "default_factory" in keywords:
                raise CodegenError(
                    f"{where}: {node.name}.{name} has a default_factory: describe its default "
                    "in this script before using one"
                )
            default = keywords.get("default", value.args[0] if value.args else None)
            if isinstance(default, ast.Constant) and default.value is Ellipsis:
                default = None
        fields.append(ModelField(name, statement.annotation, default))
    return tuple(fields)


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


# -- signatures -------------------------------------------------------------------------------

ParamKind = Literal["positional", "positional_or_keyword", "var_positional", "keyword", "var_kw"]


@dataclass
class Param:
    """One parameter of a signature, as source text."""

    name: str
    kind: ParamKind
    annotation: str | None = None
    default: str | None = None
    unwrap: bool = False  # the blocking client passes it on as ``unwrap(name)``

    def text(self) -> str:
        star = {"var_positional": "*", "var_kw": "**"}.get(self.kind, "")
        out = star + self.name
        if self.annotation is not None:
            out += f": {self.annotation}"
        if self.default is not None:
            out += f" = {self.default}" if self.annotation is not None else f"={self.default}"
        return out

    def argument(self) -> str:
        """How a delegation passes it on."""
        value = f"unwrap({self.name})" if self.unwrap else self.name
        if self.kind == "positional":
            return value
        if self.kind == "var_positional":
            return f"*{value}"
        if self.kind == "var_kw":
            return f"**{value}"
        return f"{self.name}={value}"


def params_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Param]:
    """A function's parameters, ``self`` included, with their annotation and default text."""
    a = node.args
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults))
    defaults += a.defaults
    params = []
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind: ParamKind = "positional" if index < len(a.posonlyargs) else "positional_or_keyword"
        params.append(_param(arg, kind, default))
    if a.vararg is not None:
        params.append(_param(a.vararg, "var_positional", None))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        params.append(_param(arg, "keyword", default))
    if a.kwarg is not None:
        params.append(_param(a.kwarg, "var_kw", None))
    return params


def _param(arg: ast.arg, kind: ParamKind, default: ast.expr | None) -> Param:
    return Param(
        arg.arg,
        kind,
        None if arg.annotation is None else ast.unparse(arg.annotation),
        None if default is None else ast.unparse(default),
    )


def signature(params: list[Param]) -> str:
    """Parameters as a ``def`` writes them, with ``/`` and ``*`` where they belong."""
    parts: list[str] = []
    for index, param in enumerate(params):
        if param.kind == "keyword" and not any(
            p.kind in ("keyword", "var_positional") for p in params[:index]
        ):
            parts.append("*")
        parts.append(param.text())
        if param.kind == "positional" and (
            index + 1 == len(params) or params[index + 1].kind != "positional"
        ):
            parts.append("/")
    return ", ".join(parts)


def overloads(
    impl: ast.FunctionDef | ast.AsyncFunctionDef,
    models: Models,
    *,
    is_async: bool,
    returns: str,
) -> str:
    """The overloads of ``enqueue``-like ``impl``: one per typed model, then the catch-all.

    ``impl`` takes ``(self, model: str, /, *, ..., **params: Any)``; the typed model's required
    fields become keyword parameters, its options ``**params: Unpack[...Options]``.

    Raises:
        CodegenError: ``impl`` does not have that shape, or a field shadows a parameter.
    """
    where = f"the overloads of {impl.name}"
    params = params_of(impl)
    shape = [p.kind for p in params]
    if (
        len(params) < 3
        or shape[:2] != ["positional", "positional"]
        or params[1].name != "model"
        or params[1].annotation != "str"
        or shape[-1] != "var_kw"
        or params[-1].annotation != "Any"
        or any(kind != "keyword" for kind in shape[2:-1])
    ):
        raise CodegenError(
            f"{where}: the implementation must take (self, model: str, /, *, ..., **params: Any)"
        )
    keywords = [
        Param(p.name, p.kind, p.annotation, None if p.default is None else "...")
        for p in params[2:-1]
    ]
    kwarg = params[-1]
    prefix = "async def" if is_async else "def"
    out = []
    for model in models.typed:
        clash = {f.name for f in model.fields} & {p.name for p in keywords}
        if clash:
            raise CodegenError(f"{where}: {model.params_class} has fields named {sorted(clash)}")
        typed = [
            params[0],
            Param("model", "positional", f"Literal[{model.model_id!r}]"),
            *(Param(f.name, "keyword", ast.unparse(f.annotation)) for f in model.required),
            *keywords,
            Param(kwarg.name, "var_kw", f"Unpack[{model.options_class}]"),
        ]
        out.append(f"@overload\n{prefix} {impl.name}({signature(typed)}) -> {returns}: ...\n")
    catch_all = [params[0], params[1], *keywords, kwarg]
    out.append(f"@overload\n{prefix} {impl.name}({signature(catch_all)}) -> {returns}: ...\n")
    return "".join(out)  # no blank lines between overloads, as in typeshed


# -- 1. the options ---------------------------------------------------------------------------

OPTIONS_HEADER: Final = f"""\
# Generated by {SCRIPT} from the typed models of _params.py: do not edit.
# Change _params.py, then run `uv run python {SCRIPT}`.
"""


def options_module(models: Models) -> str:
    """The source of ``_options.py`` (before formatting)."""
    used: set[str] = {"TypedDict"}
    classes = []
    for model in models.typed:
        lines = [f"{f.name}: {f.option_annotation}" for f in model.optional]
        lines += [f"{name}: {QUEUE_FIELD_ANNOTATION}" for name in models.queue_fields]
        for model_field in model.optional:
            used |= _names(_expr(model_field.option_annotation))
        required = [f"``{f.name}``" for f in model.required]
        if required:
            verb = "is" if len(required) == 1 else "are"
            required_text = f" ({_listed(required)} {verb} required)"
        else:
            required_text = ""
        defaults = ", ".join(f.described_default for f in model.optional)
        doc = _fill(
            f"The optional keyword arguments of a ``{model.model_id}`` request{required_text}, "
            "for editors and type checkers.",
            4,
        )
        if defaults:
            doc += "\n\n" + _fill(
                f"Defaults (applied by the server when a key is left out): {defaults}.", 4
            )
        body = "\n    ".join(lines)
        classes.append(
            f"class {model.options_class}(TypedDict, total=False):\n"
            f'    """{_indent_doc(doc, 4)}"""\n\n    {body}\n'
        )
    origins = models.names.resolve(sorted(used - {"TypedDict"}), "_options.py")
    origins["TypedDict"] = ("typing", "TypedDict")
    names = sorted(m.options_class for m in models.typed)
    return (
        OPTIONS_HEADER
        + '"""The optional keyword arguments of each typed model, as TypedDicts (generated).\n\n'
        + _fill(
            "Each lists the optional fields of a ``*Params`` model of ``_params.py`` (with "
            "``X | None`` reduced to ``X``: leave the key out for none) and the queue's fields "
            f"({_listed([f'``{n}``' for n in models.queue_fields])}). ``enqueue`` and "
            "``generate`` take them as ``**params: Unpack[...]``.",
            0,
        )
        + '\n"""\n\nfrom __future__ import annotations\n\n'
        + _imports(origins, f"{PACKAGE}._options")
        + f"\n\n__all__ = {names!r}\n\n\n"
        + "\n\n".join(classes)
    )


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fill(text: str, indent: int) -> str:
    """A paragraph wrapped to fit the line length once indented (:func:`_indent_doc`), with
    room for the opening quotes."""
    width = LINE_LENGTH - indent - 3
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False))


def _imports(origins: dict[str, tuple[str, str | None]], module: str) -> str:
    """Import statements for names (ruff sorts them); relative within the package."""
    package = module.rpartition(".")[0]
    lines = []
    for local, (source, attr) in sorted(origins.items()):
        if attr is None:
            lines.append(f"import {source}" + (f" as {local}" if local != source else ""))
            continue
        if source.startswith(package + "."):
            source = "." + source.removeprefix(package + ".")
        lines.append(f"from {source} import {attr}" + (f" as {local}" if local != attr else ""))
    return "\n".join(lines) + "\n"


# -- 2. the overloads in place ----------------------------------------------------------------


@dataclass
class Region:
    path: Path
    method: str


def overload_regions(src: Path) -> list[Region]:
    """Every region of generated overloads in the package, by file and method."""
    regions = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        text = path.read_text()
        if "# --- begin generated: overloads of" not in text:
            continue
        for line in text.splitlines():
            match = BEGIN.match(line)
            if match:
                regions.append(Region(path, match["name"]))
    return regions


def with_overloads(path: Path, text: str, models: Models) -> str:
    """A module with its overload regions written anew, and its ``_options`` import."""
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text, filename=str(path))
    out: list[str] = []
    index = 0
    used: set[str] = set()
    while index < len(lines):
        begin = BEGIN.match(lines[index].rstrip("\n"))
        if begin is None:
            out.append(lines[index])
            index += 1
            continue
        name, indent = begin["name"], begin["indent"]
        end = next(
            (
                j
                for j in range(index + 1, len(lines))
                if (m := END.match(lines[j].rstrip("\n"))) and m["name"] == name
            ),
            None,
        )
        if end is None:
            raise CodegenError(f"{path.name}: no '# --- end generated: overloads of {name}'")
        impl = _implementation(tree, name, index + 1, path)
        generated = overloads(
            impl,
            models,
            is_async=isinstance(impl, ast.AsyncFunctionDef),
            returns=ast.unparse(impl.returns) if impl.returns else "None",
        )
        used |= {m.options_class for m in models.typed}
        out += [lines[index], textwrap.indent(generated, indent), lines[end]]
        index = end + 1
    return _with_options_import("".join(out), path, sorted(used))


def _implementation(
    tree: ast.Module, name: str, line: int, path: Path
) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The ``def name`` (not an overload) of the class whose body holds line ``line``."""
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.ClassDef)
            and node.lineno <= line <= (node.end_lineno or node.lineno)
        ):
            continue
        for item in node.body:
            if (
                isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and item.name == name
                and not any(_decorator(d) == "overload" for d in item.decorator_list)
            ):
                return item
    raise CodegenError(f"{path.name}: the overloads of {name} have no implementation after them")


def _decorator(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _with_options_import(text: str, path: Path, names: list[str]) -> str:
    tree = ast.parse(text, filename=str(path))
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "_options"
    ]
    if len(found) != 1:
        raise CodegenError(
            f"{path.name}: its generated overloads need one `from ._options import ...` "
            "(under `if TYPE_CHECKING:`); this script keeps its list of names"
        )
    (node,) = found
    lines = text.splitlines(keepends=True)
    statement = " " * node.col_offset + f"from ._options import {', '.join(names)}\n"
    return "".join([*lines[: node.lineno - 1], statement, *lines[node.end_lineno or node.lineno :]])


# -- 3. the blocking client -------------------------------------------------------------------

CLIENT_HEADER: Final = f"""\
# Generated by {SCRIPT} from AsyncClient: do not edit.
# Change AsyncClient (or the script), then run `uv run python {SCRIPT}`.
"""

CLIENT_MODULE_DOC: Final = '''\
"""``Client``: the blocking client, generated from ``AsyncClient`` by ``.ci/codegen.py``.

Each public method and property of ``AsyncClient`` is here with the same parameters and
defaults, ``Generation`` mapped to ``SyncGeneration`` (and the like), and delegates to the
``AsyncClient`` on the client's event loop thread through ``_sync.Bridge``.
"""
'''


@dataclass
class Member:
    """A public method or property of AsyncClient, found along its MRO."""

    name: str
    kind: Literal["async", "sync", "property"]
    node: ast.FunctionDef | ast.AsyncFunctionDef
    doc: str | None
    names: ModuleNames
    owner: str  # the class that defines it


@dataclass
class Emitted:
    """The blocking client's source as it is being written, with the names it uses."""

    origins: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=list)

    def use(self, origins: dict[str, tuple[str, str | None]], where: str) -> None:
        for name, origin in origins.items():
            if self.origins.setdefault(name, origin) != origin:
                raise CodegenError(
                    f"{where}: {name!r} is {origin} here but {self.origins[name]} elsewhere"
                )

    def add(self, code: str) -> None:
        self.chunks.append(textwrap.indent(code, "    "))


def async_client_members(src: Path) -> tuple[type, list[Member]]:
    """AsyncClient and its members along the MRO, the first definition of each name winning,
    in definition order (the class's own first)."""
    sys.path.insert(0, str(src))
    # The package imports the generated module for its ``Client``: a stand-in takes its place,
    # so that a stale or missing one never stops it from being written anew.
    stand_in = types.ModuleType(f"{PACKAGE}._sync_client")
    stand_in.Client = type("Client", (), {"__doc__": "A stand-in."})  # type: ignore[attr-defined]
    sys.modules[stand_in.__name__] = stand_in
    import oxen_queue  # after the path is set: this tree's package

    if not Path(oxen_queue.__file__ or "").resolve().is_relative_to(src.resolve()):
        raise CodegenError(f"imported {oxen_queue.__file__}, not the package under {src}")
    async_client: type = oxen_queue.AsyncClient
    members: list[Member] = []
    seen: set[str] = set()
    modules: dict[str, ModuleNames] = {}
    for cls in async_client.__mro__[:-1]:
        for name, value in vars(cls).items():
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("_") and name not in ("__init__", "__aenter__", "__aexit__"):
                continue
            kind: Literal["async", "sync", "property"]
            if isinstance(value, property) and inspect.isfunction(value.fget):
                if value.fset is not None or value.fdel is not None:
                    raise CodegenError(f"AsyncClient.{name}: a settable property")
                function, kind = value.fget, "property"
            elif inspect.iscoroutinefunction(value):
                function, kind = value, "async"
            elif inspect.isfunction(value):
                function, kind = value, "sync"
            else:
                raise CodegenError(
                    f"AsyncClient.{name}: a public {type(value).__name__}, which this script "
                    "cannot give a blocking form"
                )
            module = sys.modules[function.__module__]
            path = Path(inspect.getsourcefile(function) or "")
            if module.__name__ not in modules:
                modules[module.__name__] = ModuleNames(
                    path, module.__name__, is_package=path.name == "__init__.py"
                )
            node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            doc = inspect.cleandoc(function.__doc__) if function.__doc__ else None
            members.append(Member(name, kind, node, doc, modules[module.__name__], cls.__name__))
    return async_client, members


def client_module(src: Path, models: Models, regions: list[Region]) -> str:
    """The source of ``_sync_client.py`` (before formatting)."""
    async_client, members = async_client_members(src)
    by_name = {m.name: m for m in members}
    for required in ("__init__", "__aenter__", "__aexit__", "aclose"):
        if required not in by_name:
            raise CodegenError(f"AsyncClient has no {required}: the blocking client needs it")
    overloaded = {r.method for r in regions}
    # Not the class's module: the package reports itself as the module of its public classes.
    client_path = Path(inspect.getsourcefile(async_client.__init__) or "")  # type: ignore[misc]
    emitted = Emitted()
    emitted.use({name: (module, name) for name, module in TEMPLATE_NAMES.items()}, "the templates")
    emitted.use({"AsyncClient": (_module_name(client_path, src), "AsyncClient")}, "the templates")
    emitted.use(
        {m.options_class: (f"{PACKAGE}._options", m.options_class) for m in models.typed},
        "the options",
    )

    init = by_name["__init__"]
    init_params = params_of(init.node)[1:]
    if any(p.kind != "keyword" for p in init_params):
        raise CodegenError("AsyncClient.__init__ must take keyword-only arguments")
    _use_names(emitted, init, init_params, None)
    options = ", ".join(f"{p.name!r}: {p.name}" for p in init_params)
    class_doc = CLIENT_DOC + _sections(inspect.cleandoc(async_client.__doc__ or ""), set())
    emitted.add(
        f'"""{_indent_doc(class_doc, 4)}"""\n\n'
        "_bridge: Bridge\n_async: AsyncClient\n\n"
        f"def __init__(self, {signature(init_params)}) -> None:\n"
        "    # Spelled out (not **options) so that editors and type checkers see them.\n"
        f"    self._bridge, self._async = Bridge.open({{{options}}})\n\n"
        "def __repr__(self) -> str:\n"
        '    return f"<Client of {self._async!r}>"\n\n'
        "def __enter__(self) -> Self:\n"
        "    return self\n\n"
    )
    aexit = by_name["__aexit__"]
    exit_params = params_of(aexit.node)
    _use_names(emitted, aexit, exit_params, aexit.node.returns)
    emitted.add(f"def __exit__({signature(exit_params)}) -> None:\n    self.close()\n\n")

    for member in members:
        if member.name.startswith("_"):
            continue
        emitted.add(_blocking_member(member, emitted, models, member.name in overloaded))

    emitted.add(
        "def _view(self, client: AsyncClient) -> Client:\n"
        '    """A Client on a view of the same AsyncClient (``with_options``): it shares this '
        'one\'s\n    event loop thread and lifetime."""\n'
        "    view = object.__new__(Client)\n"
        "    view._bridge, view._async = self._bridge, client\n"
        "    return view\n"
    )
    body = "class Client:\n" + "\n".join(emitted.chunks)
    module = f"{PACKAGE}._sync_client"
    runtime, typing_only = _runtime_and_typing_names(body, emitted.origins)
    imports = _imports({n: emitted.origins[n] for n in runtime}, module)
    if typing_only:
        imports = "from typing import TYPE_CHECKING\n" + imports
        checked = _imports({n: emitted.origins[n] for n in typing_only}, module)
        imports += "\nif TYPE_CHECKING:\n" + textwrap.indent(checked, "    ")
    return (
        CLIENT_HEADER
        + CLIENT_MODULE_DOC
        + "\nfrom __future__ import annotations\n\n"
        + imports
        + '\n__all__ = ["Client"]\n\n\n'
        + body
    )


def _use_names(
    emitted: Emitted, member: Member, params: list[Param], returns: ast.expr | None
) -> None:
    """Record where the names of a member's annotations and defaults come from."""
    used: set[str] = set()
    for param in params:
        for text in (param.annotation, param.default):
            if text is not None:
                used |= _names(_expr(text))
    if returns is not None:
        used |= _names(returns)
    where = f"AsyncClient.{member.name}"
    emitted.use(member.names.resolve(sorted(used - {"Client", "self"}), where), where)


def _blocking_member(member: Member, emitted: Emitted, models: Models, overloaded: bool) -> str:
    """A member of the blocking client: its overloads, signature, docstring and delegation."""
    name = "close" if member.name == "aclose" else member.name
    where = f"AsyncClient.{member.name}"
    returns = ast.unparse(member.node.returns) if member.node.returns else "None"
    sync_returns, convert = _blocking_return(returns, where)
    params = params_of(member.node)
    _use_names(emitted, member, params, member.node.returns)
    kept: list[Param] = [params[0]]
    omitted: list[str] = []
    for param in params[1:]:
        annotation = _expr(param.annotation) if param.annotation else None
        if annotation is not None and _names(annotation) & CALLBACK_TYPES:
            if param.default is None:
                raise CodegenError(f"{where}: callback {param.name!r} must have a default")
            omitted.append(param.name)
            continue
        kept.append(_blocking_argument(param, where))
    arguments = ", ".join(p.argument() for p in kept[1:])
    if member.kind == "property":
        value = f"self._bridge.call(lambda: self._async.{member.name})"
    elif member.name == "aclose":
        value = "self._bridge.close()"
    elif member.kind == "sync":
        value = f"self._bridge.call(lambda: self._async.{member.name}({arguments}))"
    else:
        value = f"self._bridge.run(self._async.{member.name}({arguments}))"
    statement = f"return {convert.format(value)}" if sync_returns != "None" else value
    doc = _blocking_doc(member, name, omitted)
    out = ""
    if overloaded:
        out += overloads(member.node, models, is_async=False, returns=sync_returns) + "\n"
    if member.kind == "property":
        out += "@property\n"
    out += (
        f"def {name}({signature(kept)}) -> {sync_returns}:\n"
        f'    """{_indent_doc(doc, 4)}"""\n'
        f"    {statement}\n\n"
    )
    return out


def _blocking_return(annotation: str, where: str) -> tuple[str, str]:
    """A return annotation as the blocking client writes it, and how it converts the value."""
    key = ast.unparse(_expr(annotation))
    if key in RETURNS:
        return RETURNS[key]
    if _names(_expr(key)) & ASYNC_ONLY:
        raise CodegenError(f"{where}: returns {key}, which has no blocking form in RETURNS")
    return key, "{}"


def _blocking_argument(param: Param, where: str) -> Param:
    """A parameter as the blocking client takes it: ``Generation`` in a union becomes
    ``SyncGeneration``, unwrapped before the call; any other async-only type is refused."""
    if param.annotation is None or not _names(_expr(param.annotation)) & ASYNC_ONLY:
        return param
    members = _union_members(_expr(param.annotation))
    if any(_names(m) & ASYNC_ONLY for m in members if ast.unparse(m) != "Generation"):
        raise CodegenError(
            f"{where}: parameter {param.name!r} ({param.annotation}) has no blocking form: "
            "only `Generation | ...` is mapped (to `SyncGeneration | ...`)"
        )
    mapped = " | ".join(
        "SyncGeneration" if ast.unparse(m) == "Generation" else ast.unparse(m) for m in members
    )
    return Param(param.name, param.kind, mapped, param.default, unwrap=True)


def _blocking_doc(member: Member, name: str, omitted: list[str]) -> str:
    """AsyncClient's summary (in blocking words), a pointer to it, its Args, Returns and Raises."""
    if not member.doc:
        raise CodegenError(f"{member.owner}.{member.name}: a public member needs a docstring")
    doc = member.doc
    summary = doc.split("\n\n", 1)[0].strip()
    # A summary that introduces code (``::`` in reST, ``:`` before a fence) loses its colon:
    # the code after it is not copied.
    summary = " ".join(summary.split()).rstrip(":")
    if not summary.endswith("."):
        summary += "."
    paragraphs = [_fill(summary, 8)]
    # A link of mkdocs-autorefs, which the API reference resolves (AsyncClient's documented
    # members have anchors; the build is strict, so a broken one fails it).
    link = f"[`AsyncClient.{member.name}`][{PACKAGE}.AsyncClient.{member.name}]"
    pointer = f"The blocking form of {link}."
    if omitted:
        listed = _listed([f"``{n}``" for n in omitted])
        pointer += (
            f" It does not take {listed}: callbacks would run on the client's event loop "
            "thread, not the caller's."
        )
    if name in BLOCKING_NOTES:
        pointer += " " + BLOCKING_NOTES[name]
    paragraphs.append(_fill(pointer, 8))
    text = "\n\n".join(paragraphs) + _sections(doc, set(omitted))
    copied = re.sub(r"``[^`]*``", "", summary + _sections(doc, set(omitted)))
    if re.search(r"\bawait", copied, re.IGNORECASE):
        raise CodegenError(
            f"{member.owner}.{member.name}: its docstring says 'await', untrue of the blocking "
            "client: reword the docstring"
        )
    return text


def _sections(doc: str, omitted: set[str]) -> str:
    """The Google sections kept in the blocking client's docstrings (Args, Returns, Raises),
    without the entries of omitted parameters, and with a ``Generation`` (an AsyncClient's
    handle) called a generation."""
    lines = doc.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = SECTION.match(lines[index])
        if not match:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and (not lines[end] or lines[end].startswith(" ")):
            if SECTION.match(lines[end]):
                break
            end += 1
        if match[1] in KEPT_SECTIONS:
            section = lines[index:end]
            while section and not section[-1].strip():
                section.pop()
            if match[1] in ("Args", "Arguments"):
                section = _without_entries(section, omitted)
            if len(section) > 1:
                out.append("\n".join(section))
        index = end
    text = "".join(f"\n\n{s}" for s in out)
    # Not inside a cross-reference (``[`Generation`][oxen_queue.Generation]``), which must
    # keep naming the class it links to.
    return re.sub(r"(?<![`.])\bGeneration\b(?![\w`\]])", "generation", text)


def _without_entries(section: list[str], omitted: set[str]) -> list[str]:
    kept = [section[0]]
    skipping = False
    for line in section[1:]:
        entry = re.match(r"^    \**(\w+)\b", line)
        if entry and not line.startswith("     "):
            skipping = entry[1] in omitted
        if not skipping:
            kept.append(line)
    return kept


def _indent_doc(doc: str, indent: int) -> str:
    """A docstring's text, its lines after the first indented (the closing quotes after)."""
    if "\\" in doc or '"""' in doc:
        raise CodegenError(f"a docstring with a backslash or triple quotes: {doc[:60]!r}")
    lines = doc.splitlines()
    rest = [(" " * indent + line) if line.strip() else "" for line in lines[1:]]
    closing = "\n" + " " * indent if len(lines) > 1 else ""
    return "\n".join([lines[0], *rest]) + closing


def _runtime_and_typing_names(
    body: str, origins: dict[str, tuple[str, str | None]]
) -> tuple[list[str], list[str]]:
    """The imported names the generated class reads when it runs, and those only its
    annotations read (imported under ``TYPE_CHECKING``)."""
    tree = ast.parse(body)
    annotations: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    in_annotations = {id(n) for a in annotations for n in ast.walk(a)}
    runtime = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and id(n) not in in_annotations and n.id in origins
    }
    typing_only = {
        n.id
        for a in annotations
        for n in ast.walk(a)
        if isinstance(n, ast.Name) and n.id in origins and n.id not in runtime
    }
    unknown = {
        n.id
        for a in annotations
        for n in ast.walk(a)
        if isinstance(n, ast.Name) and n.id not in origins and not hasattr(builtins, n.id)
    } - {"Client"}
    if unknown:
        raise CodegenError(f"the blocking client's annotations use unknown names {sorted(unknown)}")
    return sorted(runtime), sorted(typing_only)


# -- formatting, writing, checking ------------------------------------------------------------


def ruff(root: Path, path: Path, text: str, *args: str) -> str:
    """``text`` through ``ruff`` (the project's configuration), as if it were ``path``."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    if result.returncode != 0:
        raise CodegenError(f"ruff {' '.join(args)} failed on {path}:\n{result.stderr}")
    return result.stdout


def formatted(root: Path, path: Path, text: str) -> str:
    text = ruff(root, path, text, "check", "--select", "I", "--fix", "--exit-zero", "--quiet")
    return ruff(root, path, text, "format", "--quiet")


def generate(root: Path, *, check: bool) -> int:
    """Write (or with ``check``, compare) every generated file; the exit status."""
    src = root / "src"
    models = read_models(src)
    outputs: dict[Path, str] = {}
    outputs[src / PACKAGE / "_options.py"] = options_module(models)
    regions = overload_regions(src)
    if not regions:
        raise CodegenError("no '# --- begin generated: overloads of NAME' region in the package")
    for path in sorted({r.path for r in regions}):
        outputs[path] = with_overloads(path, path.read_text(), models)
    stale = _settle(root, outputs, check=check)
    try:
        client = {src / PACKAGE / "_sync_client.py": client_module(src, models, regions)}
    except ImportError as exc:
        if check and stale:  # the package imports the stale _options.py: reported above
            print(f"\nthe blocking client was not compared: the package does not import ({exc})")
            return 1
        raise
    stale += _settle(root, client, check=check)
    if check and stale:
        print(f"\n{len(stale)} generated file(s) are stale: run `uv run python {SCRIPT}`")
        return 1
    return 0


def _settle(root: Path, outputs: dict[Path, str], *, check: bool) -> list[Path]:
    stale = []
    for path, text in outputs.items():
        new = formatted(root, path, text)
        old = path.read_text() if path.exists() else ""
        if old == new or (old and formatted(root, path, old) == new):
            continue
        stale.append(path)
        shown = path.relative_to(root)
        if check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"{shown} (as it is)",
                    f"{shown} (as generated)",
                )
            )
        else:
            path.write_text(new)
            print(f"wrote {shown}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if any generated code is stale",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the checkout to work on (default: this script's)",
    )
    args = parser.parse_args(argv)
    try:
        return generate(args.root.resolve(), check=args.check)
    except CodegenError as exc:
        print(f"{SCRIPT}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
