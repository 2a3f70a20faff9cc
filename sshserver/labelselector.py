"""Kubernetes label selectors (matchLabels + matchExpressions), evaluated locally."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        """The string form that list calls take as `labelSelector`."""
        parts = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            else:
                parts.append(str(r))
        return ",".join(parts)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """Builds a selector from its API form; an empty selector matches everything."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ValueError("selector must be an object with matchLabels and/or matchExpressions")
        reqs: list[Requirement] = []
        labels = spec.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            raise ValueError("selector.matchLabels must be a map of strings")
        for key, value in labels.items():
            reqs.append(Requirement(str(key), "In", frozenset({str(value)})))
        for expr in spec.get("matchExpressions") or []:
            if not isinstance(expr, Mapping) or "key" not in expr:
                raise ValueError("each matchExpressions entry needs a key and an operator")
            op = expr.get("operator")
            if op not in _OPERATORS:
                raise ValueError(f"unknown selector operator {op!r} (use one of {', '.join(_OPERATORS)})")
            values = frozenset(str(v) for v in expr.get("values") or [])
            if op in ("In", "NotIn") and not values:
                raise ValueError(f"selector operator {op} needs values")
            reqs.append(Requirement(str(expr["key"]), op, values))
        return cls(tuple(reqs))
