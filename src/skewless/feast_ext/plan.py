"""What ``apply`` would change, said briefly: Feast's registry diff read per object, feature by feature.

Feast's ``feast plan`` prints, for every object it finds changed, each differing top-level proto field as two whole
proto dumps (a feature view's ``features`` list, its ``batch_source``...): 110–260 lines for one added feature, in
which the added feature is hard to find. It also judges a change by proto inequality, so fields that no definition
sets count as changes: a data source's ``meta`` (Feast stamps the created/updated times at construction and apply;
skewless's own sources fix them, :mod:`skewless.feast_ext.sources`, but a source declared with Feast's classes does
not) and the registry's ``project`` (which Feast itself ignores at the top level only).

:func:`summary` reads the same :class:`~feast.diff.registry_diff.RegistryDiff` and says, per object (feature view,
feature service, entity, data source, ...), whether it is added, removed or changed, and for a change exactly what:
features added and removed with their types, features retyped (``Int64 -> Float64``) or otherwise changed, and
every other property that differs as ``path: old -> new`` (``ttl``, ``tags``, ``batch_source.timestamp_field``...).
An object whose only differences are the ignored fields above is not a change. Nothing changed: ``no changes``.

Feast's infrastructure diff is left out of the summary: for the project's local online store Feast records no
infrastructure (its "Created sqlite table" lines repeat on every plan, one per view), and a table follows from its
view, which the summary names. :func:`plan_text` with ``verbose`` adds Feast's own full output after the summary.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from feast.diff.registry_diff import RegistryDiff
    from feast.repo_config import RepoConfig

#: Printed when the registry already holds what the definitions declare.
NO_CHANGES = "no changes"

#: Proto fields that are not part of a definition, by message type (any depth): set by Feast or by the registry.
IGNORED_FIELDS: dict[str, frozenset[str]] = {
    "feast.core.DataSource": frozenset({"meta", "project"}),  # created/updated stamps, event-time range; registry's
}
#: Top-level spec fields that are not part of a definition (Feast's own ``FIELDS_TO_IGNORE``).
IGNORED_SPEC_FIELDS = frozenset({"project"})
#: Longest rendering of one value before it is cut.
VALUE_WIDTH = 70


@dataclass(frozen=True)
class ObjectChange:
    """One registry object that ``apply`` would add, remove or change, with what changes in it."""

    kind: str  # Feast's name of the object type: "feature view", "feature service", "entity", "data source", ...
    name: str
    action: str  # "added" | "removed" | "changed"
    details: tuple[str, ...] = field(default=())

    def lines(self) -> list[str]:
        return [f"{self.kind} {self.name}: {self.action}"] + [f"  {d}" for d in self.details]


def changes(registry_diff: "RegistryDiff") -> list[ObjectChange]:
    """The objects of ``registry_diff`` that really change, in Feast's object-type order, then by name."""
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FEAST_OBJECT_TYPES

    order = {t: i for i, t in enumerate(FEAST_OBJECT_TYPES)}
    found = []
    for d in sorted(registry_diff.feast_object_diffs, key=lambda d: (order.get(d.feast_object_type, 99), d.name)):
        if d.name == DUMMY_ENTITY_NAME:
            continue
        kind = d.feast_object_type.value
        if d.transition_type == TransitionType.CREATE:
            found.append(ObjectChange(kind, d.name, "added", _contents(d.new_feast_object)))
        elif d.transition_type == TransitionType.DELETE:
            found.append(ObjectChange(kind, d.name, "removed", _contents(d.current_feast_object)))
        elif d.transition_type == TransitionType.UPDATE:
            details = object_changes(d.current_feast_object, d.new_feast_object)
            if details:
                found.append(ObjectChange(kind, d.name, "changed", tuple(details)))
    return found


def summary(registry_diff: "RegistryDiff") -> str:
    """The short form: one block per changed object, or :data:`NO_CHANGES`."""
    found = changes(registry_diff)
    return "\n".join(line for c in found for line in c.lines()) if found else NO_CHANGES


def plan_text(config: "RepoConfig", repo_path: Path, skip_source_validation: bool,
              skip_feature_view_validation: bool = False, verbose: bool = False) -> str:
    """What ``feast plan`` computes for ``repo_path`` (same steps and checks), as :func:`summary`; with ``verbose``,
    followed by Feast's own registry and infrastructure diff. Feast's remarks while it reads the repository (the
    project-name notice) are not part of the text unless ``verbose``."""
    from feast.repo_operations import _get_repo_contents, _get_store_and_registry

    out = []
    notes = io.StringIO()
    cwd = os.getcwd()
    os.chdir(repo_path)  # Feast's plan imports the repository's modules from its directory
    try:
        with contextlib.redirect_stdout(notes):
            repo = _get_repo_contents(repo_path, config.project, config)
        for project in repo.projects:
            config.project = project.name
            store, _ = _get_store_and_registry(config)
            if not skip_source_validation:
                provider = store._get_provider()
                for fv in repo.feature_views:
                    if fv.batch_source is not None:
                        provider.validate_data_source(store.config, fv.batch_source)
            registry_diff, infra_diff, _ = store.plan(repo, skip_feature_view_validation=skip_feature_view_validation)
            if len(repo.projects) > 1:
                out.append(f"project {project.name}:")
            out.append(summary(registry_diff))
            if verbose:
                out += ["", "Feast's plan:", notes.getvalue().rstrip(), registry_diff.to_string().rstrip(),
                        infra_diff.to_string().rstrip()]
    finally:
        os.chdir(cwd)
    return "\n".join(line for line in out if line is not None)


# --- one object --------------------------------------------------------------------------------------------------

def object_changes(current: Any, new: Any) -> list[str]:
    """What differs between the registered ``current`` and the declared ``new`` version of one object, as lines:
    features added / removed / retyped / changed first, then every other differing property. Empty: no change."""
    from feast.feature_service import FeatureService

    old_proto, new_proto = current.to_proto(), new.to_proto()
    old_spec = old_proto.spec if _has_spec(old_proto) else old_proto
    new_spec = new_proto.spec if _has_spec(new_proto) else new_proto
    skip = set(IGNORED_SPEC_FIELDS) | set(IGNORED_FIELDS.get(old_spec.DESCRIPTOR.full_name, ()))
    lines: list[str] = []
    if isinstance(new, FeatureService):
        lines += _feature_changes(_service_features(current), _service_features(new))
        lines += _projection_changes(current, new)
        skip.add("features")
    elif hasattr(new, "features") and "features" in old_spec.DESCRIPTOR.fields_by_name:
        olds, news = {f.name: f for f in current.features}, {f.name: f for f in new.features}
        feature_lines = _feature_changes(olds, news)
        lines += feature_lines
        if not feature_lines and [f.name for f in current.features] != [f.name for f in new.features]:
            lines.append("order of features changed: " + ", ".join(news))
        skip.add("features")
    lines += proto_changes(old_spec, new_spec, skip=skip)
    return lines


def _has_spec(proto: Any) -> bool:
    return "spec" in proto.DESCRIPTOR.fields_by_name


def _service_features(service: Any) -> dict[str, Any]:
    """A feature service's features as ``view:feature`` → Field (the view's alias if it has one)."""
    return {f"{p.name_to_use()}:{f.name}": f for p in service.feature_view_projections for f in p.features}


def _feature_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = [f"added feature {n} ({new[n].dtype})" for n in new if n not in old]
    lines += [f"removed feature {n} ({old[n].dtype})" for n in old if n not in new]
    for n in (n for n in new if n in old):
        if str(old[n].dtype) != str(new[n].dtype):
            lines.append(f"changed feature {n}: type {old[n].dtype} -> {new[n].dtype}")
        else:
            other = proto_changes(old[n].to_proto(), new[n].to_proto(), skip={"name", "value_type"})
            lines += [f"changed feature {n}: {c}" for c in other]
    return lines


#: A service's per-view selection: fields copied from the view (its change is the view's, named there) or listed
#: feature by feature (:func:`_feature_changes`).
PROJECTION_COPIES = frozenset({"feature_columns", "batch_source", "stream_source", "timestamp_field",
                               "date_partition_column", "created_timestamp_column"})


def _projection_changes(current: Any, new: Any) -> list[str]:
    """A service's per-view selections other than their features and the view's own fields (alias, join key map,
    version...), by view."""
    olds = {p.name_to_use(): p.to_proto() for p in current.feature_view_projections}
    news = {p.name_to_use(): p.to_proto() for p in new.feature_view_projections}
    lines = []
    for name in news:
        if name in olds:
            lines += [f"changed selection of {name}: {c}"
                      for c in proto_changes(olds[name], news[name], skip=PROJECTION_COPIES)]
    return lines


def _contents(obj: Any) -> tuple[str, ...]:
    """One line on what an added or removed object holds: its features, if it has any."""
    from feast.feature_service import FeatureService

    if obj is None:
        return ()
    feats = _service_features(obj) if isinstance(obj, FeatureService) else \
        {f.name: f for f in getattr(obj, "features", None) or []}
    if not feats:
        return ()
    return (f"{len(feats)} feature{'s' if len(feats) > 1 else ''}: " + ", ".join(f"{n} ({f.dtype})" for n, f in feats.items()),)


# --- protos -------------------------------------------------------------------------------------------------------

def proto_changes(old: Any, new: Any, skip: Iterable[str] = (), prefix: str = "") -> list[str]:
    """The fields of two protos of one type that differ, as ``path: old -> new`` lines.

    A singular message is compared field by field (``batch_source.timestamp_field: 'a' -> 'b'``), without the
    :data:`IGNORED_FIELDS` of its type; a map by key; a repeated field and a scalar as a whole value.
    """
    skip = set(skip)
    lines = []
    for fd in old.DESCRIPTOR.fields:
        if fd.name in skip:
            continue
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a == b:
            continue
        path = prefix + fd.name
        message = fd.message_type
        if message is not None and message.GetOptions().map_entry:
            lines += _map_changes(path, a, b)
        elif fd.is_repeated:
            lines.append(f"{path}: {_repeated(a)} -> {_repeated(b)}")
        elif message is not None and message.full_name not in _ATOMIC:
            lines += proto_changes(a, b, IGNORED_FIELDS.get(message.full_name, ()), prefix=path + ".")
        else:
            lines.append(f"{path}: {_value(fd, a)} -> {_value(fd, b)}")
    return lines


#: Messages shown as one value.
_ATOMIC = frozenset({"google.protobuf.Duration", "google.protobuf.Timestamp"})


def _map_changes(path: str, a: Any, b: Any) -> list[str]:
    lines = [f"{path}[{k!r}]: added {_short(b[k])}" for k in sorted(b) if k not in a]
    lines += [f"{path}[{k!r}]: removed (was {_short(a[k])})" for k in sorted(a) if k not in b]
    lines += [f"{path}[{k!r}]: {_short(a[k])} -> {_short(b[k])}" for k in sorted(a) if k in b and a[k] != b[k]]
    return lines


def _repeated(values: Any) -> str:
    """A repeated field: the names of its messages if they have one, else its values."""
    items = list(values)
    if items and hasattr(items[0], "DESCRIPTOR"):
        if "name" in items[0].DESCRIPTOR.fields_by_name:
            return _cut("[" + ", ".join(i.name for i in items) + "]")
        return f"{len(items)} items"
    return _cut(repr(items))


def _value(fd: Any, value: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    full_name = fd.message_type.full_name if fd.message_type is not None else None
    if full_name == "google.protobuf.Duration":
        return str(value.ToTimedelta())
    if full_name == "google.protobuf.Timestamp":
        return value.ToDatetime().isoformat()
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum = fd.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else str(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    return _short(value)


def _short(value: Any) -> str:
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."
