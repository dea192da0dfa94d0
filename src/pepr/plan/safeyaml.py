"""Reading user YAML (workflow configs) with limits, before anything hashes or expands it.

PyYAML's safe loader shares one object per anchor, so a 526-byte "billion laughs" file loads
instantly but is 9**9 values to anything that walks it (hashing, JSON, schema validation,
``copy.deepcopy`` of Snakemake's merged config): ``snakemake -n`` hung. :func:`load_yaml_file`
therefore composes the node graph first and checks, without expanding anything:

* the file size (:data:`MAX_FILE_BYTES`), its nesting depth (:data:`MAX_DEPTH`) and the number
  of values it stands for once every alias is expanded (:data:`MAX_EXPANDED_NODES`);
* duplicate keys in a mapping (PyYAML silently keeps the last one), reported with both lines;

and reads ``1e-3``/``5E-4`` as numbers (YAML 1.1, which PyYAML implements, wants a dot and a
signed exponent, so users' usual spelling became the string ``'1e-3'``). Special files (FIFOs,
devices, folders) are refused by kind before they are opened, so a FIFO cannot hang the reader.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError
from pepr.files import file_kind_problem

#: Largest config file read (bytes): the paper's 1,040-job config is ~6 KB.
MAX_FILE_BYTES = 1_000_000
#: Most values a config may stand for with every alias expanded.
MAX_EXPANDED_NODES = 200_000
#: Deepest nesting of mappings/lists.
MAX_DEPTH = 64

# YAML 1.2 floats (1e-3, 5E+4, .5, 1.) on top of YAML 1.1's; ints stay ints.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _loader_class() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        """Safe loader reading 1e-3 as a float."""

    # Copy the implicit resolvers (class-level dict) and put the wider float pattern first.
    Loader.yaml_implicit_resolvers = {key: list(value) for key, value in base.yaml_implicit_resolvers.items()}
    for first in "-+0123456789.":
        resolvers = Loader.yaml_implicit_resolvers.setdefault(first, [])
        resolvers.insert(0, ("tag:yaml.org,2002:float", _FLOAT_RE))
    # but keep plain integers integers: the float pattern above needs a dot or an exponent
    return Loader


_LOADER: type | None = None


def _loader() -> type:
    global _LOADER  # one class per process: building it copies the resolver table
    if _LOADER is None:
        _LOADER = _loader_class()
    return _LOADER


def _check_graph(root: Any, source: str) -> None:
    """Duplicate keys, depth and expanded size of a composed YAML node graph (no expansion)."""
    import yaml

    sizes: dict[int, int] = {}  # id(node) -> expanded value count (aliases reuse the node object)

    def walk(node: Any, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if depth > MAX_DEPTH:
            raise PeprInputError(
                f"{source} line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep; "
                "a pepr config is a few levels deep"
            )
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise PeprInputError(
                            f"{source} line {line}: duplicate key {key.value!r} (first at line {seen[key.value]}); "
                            "YAML would silently keep the last one; remove one of them"
                        )
                    seen[key.value] = line
                total += walk(key, depth + 1) + walk(value, depth + 1)
                if total > MAX_EXPANDED_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += walk(item, depth + 1)
                if total > MAX_EXPANDED_NODES:
                    break
        if total > MAX_EXPANDED_NODES:
            raise PeprInputError(
                f"{source}: its aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values "
                "(a YAML alias bomb?); write the lists out, a pepr config holds a few hundred values"
            )
        sizes[id(node)] = total
        return total

    walk(root, 0)


def load_yaml_text(text: str, source: str = "config") -> Any:
    """Parse YAML ``text`` with the limits and checks of this module; PeprInputError on any problem."""
    import yaml

    if len(text) > MAX_FILE_BYTES:
        raise PeprInputError(f"{source} is {len(text):,} characters; a pepr config is at most {MAX_FILE_BYTES:,}")
    loader = _loader()(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(root, source)
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        one_line = " ".join(str(exc).split())
        raise PeprInputError(f"{source} is not valid YAML: {one_line}") from None
    except RecursionError:
        raise PeprInputError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """Read a YAML file with :func:`load_yaml_text`'s checks; the file must be a regular file
    of at most :data:`MAX_FILE_BYTES` in UTF-8."""
    path = Path(path)
    problem = file_kind_problem(path, what)
    if problem:
        raise PeprInputError(problem)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise PeprInputError(f"{what} {path} is {size:,} bytes; a pepr config is at most {MAX_FILE_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PeprInputError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise PeprInputError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    return load_yaml_text(text, source=f"{what} {path}")


def load_workflow_config(configfiles: list[str | os.PathLike], cli_config: dict[str, Any] | None) -> dict[str, Any]:
    """The workflow config the way pepr reads it: ``configfiles`` merged (nested mappings key by
    key, later files win), then Snakemake's ``--config key=value`` overrides on top.

    Replaces what Snakemake loaded itself (its loader takes ``1e-3`` as text, keeps the last of
    two duplicate keys and does not bound aliases). Raises PeprInputError naming the file.
    """
    merged: dict[str, Any] = {}
    for path in configfiles:
        loaded = load_yaml_file(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise PeprInputError(f"config file {path} must hold a mapping of keys, not a {type(loaded).__name__}")
        merge_into(merged, loaded)
    if cli_config:
        merge_into(merged, cli_config)
    return merged


def merge_into(target: dict[str, Any], update: Any) -> None:
    """Merge mapping ``update`` into ``target`` recursively (later config files win key by key)."""
    import copy
    from collections.abc import Mapping

    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
