"""Kubernetes label selectors (matchLabels + matchExpressions), evaluated locally."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# Label syntax as the API server validates it (apimachinery's IsQualifiedName / IsValidLabelValue).
# ASCII only, and fullmatch: `$` would let a trailing newline through.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_NAME = re.compile(_NAME, re.ASCII)
_LABEL_VALUE = re.compile(f"(?:{_NAME})?", re.ASCII)
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*", re.ASCII)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


def check_label_key(key: object) -> str:
    """A label key `[prefix/]name`; raises ValueError naming the problem."""
    if not isinstance(key, str):
        raise ValueError(f"label key {_shown(key)} must be a string")
    prefix, slash, name = key.rpartition("/")
    if slash and not (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"invalid label key {_shown(key)}: the prefix must be a DNS subdomain")
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"invalid label key {_shown(key)}: expected at most 63 characters of "
                         "A-Z, a-z, 0-9, '-', '_', '.', starting and ending alphanumeric")
    return key


def check_label_value(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"label value {_shown(value)} must be a string")
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"invalid label value {_shown(value)}: expected at most 63 characters of "
                         "A-Z, a-z, 0-9, '-', '_', '.', starting and ending alphanumeric")
    return value


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

    @property
    def empty(self) -> bool:
        """An empty selector matches every pod."""
        return not self.requirements

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
    def from_dict(cls, spec: Mapping[str, Any] | None, max_terms: int | None = None) -> LabelSelector:
        """Builds a selector from its API form; an empty selector matches everything.

        Keys and values must have the label syntax the API server enforces (so that the string
        form means what the local match does); `max_terms` bounds each list (grants written by
        people), None leaves them unbounded (selectors of workloads, already validated by the
        API server). Raises ValueError, and nothing else, for anything malformed."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise ValueError("selector must be an object with matchLabels and/or matchExpressions")
        unknown = sorted(str(k)[:40] for k in spec if k not in ("matchLabels", "matchExpressions"))
        if unknown:
            raise ValueError(f"unknown selector field(s) {', '.join(unknown)}: use matchLabels and/or "
                             "matchExpressions")
        reqs: list[Requirement] = []
        labels = spec.get("matchLabels")
        if labels is None:
            labels = {}
        if not isinstance(labels, Mapping):
            raise ValueError("selector.matchLabels must be a map of strings")
        exprs = spec.get("matchExpressions")
        if exprs is None:
            exprs = []
        if not isinstance(exprs, list):
            raise ValueError("selector.matchExpressions must be a list")
        for what, items in (("matchLabels", labels), ("matchExpressions", exprs)):
            if max_terms is not None and len(items) > max_terms:
                raise ValueError(f"selector.{what} has {len(items)} entries; the limit is {max_terms}")
        for key, value in labels.items():
            reqs.append(Requirement(check_label_key(key), "In", frozenset({check_label_value(value)})))
        for expr in exprs:
            if not isinstance(expr, Mapping) or "key" not in expr:
                raise ValueError("each matchExpressions entry needs a key and an operator")
            op = expr.get("operator")
            if not isinstance(op, str) or op not in _OPERATORS:
                raise ValueError(f"unknown selector operator {_shown(op)} (use one of {', '.join(_OPERATORS)})")
            raw = expr.get("values")
            if raw is None:
                raw = []
            if not isinstance(raw, list):
                raise ValueError("matchExpressions values must be a list of strings")
            if max_terms is not None and len(raw) > max_terms:
                raise ValueError(f"matchExpressions values has {len(raw)} entries; the limit is {max_terms}")
            values = frozenset(check_label_value(v) for v in raw)
            if op in ("In", "NotIn") and not values:
                raise ValueError(f"selector operator {op} needs values")
            if op in ("Exists", "DoesNotExist") and values:
                raise ValueError(f"selector operator {op} takes no values")
            reqs.append(Requirement(check_label_key(expr["key"]), op, values))
        return cls(tuple(reqs))
