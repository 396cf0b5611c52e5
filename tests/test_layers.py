"""The architecture's arrows point downward only (ARCHITECTURE.md, "Layers"): each package
imports only the packages listed for it here, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tidings"

# Besides itself, what each layer may import from tidings ("" is the package root, for
# __version__; "errors" is the typed errors every layer raises; "clock" the one time source).
ALLOWED: dict[str, set[str]] = {
    # media: fingerprints of plaintext media (PDQ, MD5/SHA-256), shared by the device (client)
    # and the provider side (safety, server); it depends on nothing of Tidings but errors.
    "media": {"", "errors"},
    "wire": {"", "errors", "clock"},
    "crypto": {"", "errors", "clock", "wire"},
    "storage": {"", "errors", "clock", "wire"},
    "server": {"", "errors", "clock", "wire", "crypto", "storage", "media"},
    "safety": {"", "errors", "clock", "wire", "crypto", "storage", "media"},
    "console": {"", "errors", "clock", "wire", "crypto", "storage", "safety"},
    "client": {"", "errors", "clock", "wire", "crypto", "media"},
}


def _package_of(path: Path, src: Path) -> list[str]:
    """The dotted package a module file belongs to, e.g. ["tidings", "client"]."""
    parts = [src.name, *path.relative_to(src).with_suffix("").parts]
    # Both "pkg/__init__.py" and "pkg/mod.py" resolve relative imports against pkg.
    return parts[:-1]


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """The top-level tidings packages ``path`` imports ("" for the root itself), relative
    imports resolved against the file's own package. A relative import that climbs above
    the ``tidings`` package is reported as ``"<escapes tidings>"``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package_of(path, src)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            if node.level > len(package):
                found.add("<escapes tidings>")
                continue
            base = package[: len(package) - node.level + 1]
            if node.module:
                names = [".".join([*base, node.module])]
            else:  # `from .. import x`: each x may be a module of the base package
                names = [".".join([*base, alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "tidings":
                found.add(parts[1] if len(parts) > 1 else "")
    return found


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """A relative import counts as the absolute import it resolves to, so it cannot slip a
    forbidden arrow past the layer check (nor climb out of the package)."""
    src = tmp_path / "tidings"
    sample = src / "client" / "sub" / "mod.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "from . import sibling\n"  # tidings.client.sub.sibling
        "from ..store import Store\n"  # tidings.client.store
        "from ...server import app\n"  # tidings.server
        "from ... import errors\n"  # tidings.errors
        "from ....elsewhere import x\n",  # above tidings
        encoding="utf-8",
    )
    assert _imports(sample, src) == {"client", "server", "errors", "<escapes tidings>"}
    init = src / "client" / "__init__.py"
    init.write_text("from .sdk import Client\nfrom ..console import web\n", encoding="utf-8")
    assert _imports(init, src) == {"client", "console"}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_is_below_it(layer: str) -> None:
    root = SRC / layer
    assert root.is_dir()
    offenders = {
        f"{path.relative_to(SRC)} imports tidings.{target}"
        for path in root.rglob("*.py")
        for target in _imports(path) - ALLOWED[layer] - {layer}
    }
    assert not offenders, sorted(offenders)


# --- the hazmat boundary ----------------------------------------------------------------------

HAZMAT_LIBRARIES = frozenset(
    {"cryptography", "nacl", "pysodium", "argon2", "hashlib", "_hashlib", "hmac", "_sha2"}
)
"""Primitive libraries: only `HAZMAT_MODULES` may import them (ARCHITECTURE.md: the hazmat
layer is crypto/primitives.py; argon2-cffi's password hasher has one home beside it)."""

HAZMAT_MODULES = frozenset({"crypto/primitives.py", "safety/passwords.py", "media/digests.py"})
# media/digests.py: MD5 and SHA-256 of plaintext as content identifiers for hash banks' exact
# entries (the field publishes MD5); no security property rests on them, and the media layer
# sits below crypto, so it cannot borrow crypto.primitives.sha256.


def _external_imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (absolute imports, including those
    inside functions; ``importlib.import_module("x")`` with a literal counts as well)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


def _hazmat_offenders(src: Path) -> list[str]:
    return sorted(
        f"{path.relative_to(src).as_posix()} imports {name}"
        for path in src.rglob("*.py")
        if path.relative_to(src).as_posix() not in HAZMAT_MODULES
        for name in _external_imports(path) & HAZMAT_LIBRARIES
    )


def test_only_the_hazmat_modules_import_primitive_libraries() -> None:
    assert all((SRC / module).is_file() for module in HAZMAT_MODULES)
    assert not _hazmat_offenders(SRC)


def test_hazmat_check_catches_every_form_of_import(tmp_path: Path) -> None:
    """The check above must fail when someone adds one: each import form is caught, anywhere
    in the tree (top level, in a function, the composition root), and the allowed modules
    alone are exempt."""
    src = tmp_path / "tidings"
    samples = {
        "server/a.py": "import hashlib\n",
        "server/b.py": "import hmac as _h\n",
        "safety/c.py": "def f():\n    from cryptography.hazmat.primitives import hashes\n",
        "client/d.py": "import nacl.bindings\n",
        "e.py": "from argon2.low_level import hash_secret_raw\n",
        "console/f.py": "import importlib\nx = importlib.import_module('pysodium')\n",
        "storage/g.py": "h = __import__('hashlib')\n",
        "crypto/primitives.py": "import hashlib\nimport nacl\n",
        "safety/passwords.py": "from argon2 import PasswordHasher\n",
        "wire/ok.py": "import secrets\nimport hashlib_like_but_not\n",
    }
    for name, text in samples.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text, encoding="utf-8")
    assert _hazmat_offenders(src) == [
        "client/d.py imports nacl",
        "console/f.py imports pysodium",
        "e.py imports argon2",
        "safety/c.py imports cryptography",
        "server/a.py imports hashlib",
        "server/b.py imports hmac",
        "storage/g.py imports hashlib",
    ]
