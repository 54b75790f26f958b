"""A component's interface, read from its compiled KFP component, and what a change to it
needs of the version number.

Removing or retyping an input or output, adding a required input or making an optional
one required breaks callers: a major bump. Adding an optional input or an output is a
minor bump. Anything else is a patch.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopline.core.semver import Bump, Version
from loopline.storage.catalog import CatalogError


@dataclass(frozen=True)
class Change:
    bump: Bump
    what: str


def interface(spec: dict) -> dict:
    """``{"inputs": {name: {"type", "optional"}}, "outputs": {name: {"type"}}}`` from a
    compiled component (KFP's component YAML, loaded)."""
    root = spec["root"]
    inputs, outputs = {}, {}
    for name, value in root.get("inputDefinitions", {}).get("parameters", {}).items():
        optional = bool(value.get("isOptional")) or "defaultValue" in value
        inputs[name] = {"type": value["parameterType"], "optional": optional}
    for name, value in root.get("inputDefinitions", {}).get("artifacts", {}).items():
        inputs[name] = {"type": _artifact_type(value), "optional": bool(value.get("isOptional"))}
    for name, value in root.get("outputDefinitions", {}).get("parameters", {}).items():
        outputs[name] = {"type": value["parameterType"]}
    for name, value in root.get("outputDefinitions", {}).get("artifacts", {}).items():
        outputs[name] = {"type": _artifact_type(value)}
    return {"inputs": inputs, "outputs": outputs}


def changes(before: dict, after: dict) -> list[Change]:
    """Every difference between two interfaces, each with the bump it needs."""
    found = []
    old_in, new_in = before["inputs"], after["inputs"]
    for name, spec in old_in.items():
        if name not in new_in:
            found.append(Change(Bump.MAJOR, f"input {name} was removed"))
        elif new_in[name]["type"] != spec["type"]:
            found.append(Change(Bump.MAJOR, _retyped("input", name, spec, new_in[name])))
        elif spec["optional"] and not new_in[name]["optional"]:
            found.append(Change(Bump.MAJOR, f"input {name} became required"))
        elif not spec["optional"] and new_in[name]["optional"]:
            found.append(Change(Bump.MINOR, f"input {name} became optional"))
    for name, spec in new_in.items():
        if name not in old_in:
            if spec["optional"]:
                found.append(Change(Bump.MINOR, f"optional input {name} was added"))
            else:
                found.append(Change(Bump.MAJOR, f"required input {name} was added"))
    old_out, new_out = before["outputs"], after["outputs"]
    for name, spec in old_out.items():
        if name not in new_out:
            found.append(Change(Bump.MAJOR, f"output {name} was removed"))
        elif new_out[name]["type"] != spec["type"]:
            found.append(Change(Bump.MAJOR, _retyped("output", name, spec, new_out[name])))
    for name in new_out.keys() - old_out.keys():
        found.append(Change(Bump.MINOR, f"output {name} was added"))
    return found


def needed(found: list[Change]) -> Bump:
    return max((c.bump for c in found), default=Bump.PATCH)


def describe(spec: dict) -> str:
    """One line per input and output, for people."""
    lines = []
    for name, value in spec["inputs"].items():
        lines.append(f"in  {name}: {value['type']}{' (optional)' if value['optional'] else ''}")
    for name, value in spec["outputs"].items():
        lines.append(f"out {name}: {value['type']}")
    return "\n".join(lines)


def _artifact_type(value: dict) -> str:
    title = value["artifactType"]["schemaTitle"]
    return f"List[{title}]" if value.get("isArtifactList") else title


def _retyped(kind: str, name: str, before: dict, after: dict) -> str:
    return f"{kind} {name} changed type from {before['type']} to {after['type']}"


def refuse_understated(name: str, version: Version, interface: dict, before: Version, old: dict):
    """Refuse ``version`` when it understates how its ``interface`` changed from the one
    of ``before`` (``old``); the message names the changes and the version to use."""
    found = changes(old, interface)
    bump = needed(found)
    if version.bump_from(before) < bump:
        shown = "; ".join(c.what for c in found if c.bump == bump)
        raise CatalogError(
            f"{name} {version} changes the interface of {before} ({shown}), which needs "
            f"a {bump.name.lower()} version; publish it as {before.next(bump)}"
        )


def refuse_out_of_line(
    name: str, version: Version, interface: dict, after: Version, after_interface: dict
):
    """Refuse ``version`` below the published ``after`` when ``after`` understates how it
    changes ``version``'s interface: a range that admits both picks ``after``, which lacks
    what ``version`` promises (1.1.0 adding an input, published after 1.2.0)."""
    found = changes(interface, after_interface)
    bump = needed(found)
    if after.bump_from(version) < bump:
        shown = "; ".join(c.what for c in found if c.bump == bump)
        raise CatalogError(
            f"{name} {version} would sit below {after}, which is already published and "
            f"changes its interface ({shown}); a range that admits both picks {after}. "
            "Publish the change above the newest version instead"
        )
