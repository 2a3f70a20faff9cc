"""spec.debug: the image allowlist for debug containers, checked as strictly as the CRD does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sshserver.grants import access
from sshserver.grants.access import GrantError, grant_from_object
from tests.unit.grants.test_access import obj, pubkey  # noqa: F401 (pubkey is a fixture)

REPO = Path(__file__).resolve().parents[3]


def test_no_debug_by_default(pubkey: str) -> None:  # noqa: F811
    assert grant_from_object(obj(pubkey)).debug is None


def test_images_in_order_the_first_is_the_default(pubkey: str) -> None:  # noqa: F811
    images = ["podssh.local/busybox:1.35", "registry.example.com:5000/tools/debug@sha256:" + "a" * 64,
              "busybox"]
    debug = grant_from_object(obj(pubkey, debug={"images": images})).debug
    assert debug is not None and debug.images == tuple(images) and debug.default_image == images[0]


@pytest.mark.parametrize(("debug", "words"), [
    ({}, "at least one image"),
    ({"images": []}, "must not be empty"),
    ({"images": "busybox"}, "list of strings"),
    ({"images": ["Busybox"]}, "not an image reference"),
    ({"images": ["busybox latest"]}, "not an image reference"),
    ({"images": ["busybox\n:1"]}, "not an image reference"),
    ({"images": ["-busybox"]}, "not an image reference"),
    ({"images": ["busybox", "busybox"]}, "twice"),
    ({"images": [f"img{i}" for i in range(17)]}, "limit is 16"),
    ({"images": ["a" * 513]}, "longer than 512"),
    ("busybox", "must be an object"),
])
def test_bad_debug_is_refused_by_field(pubkey: str, debug: object, words: str) -> None:  # noqa: F811
    with pytest.raises(GrantError, match=re.escape(words)) as caught:
        grant_from_object(obj(pubkey, debug=debug))
    assert "spec.debug" in str(caught.value)


def test_the_crd_pattern_is_the_parsers() -> None:
    crd = next(d for d in yaml.safe_load_all((REPO / "manifests/crd.yaml").read_text())
               if d and d["spec"]["names"]["kind"] == "SSHAccess")
    version = crd["spec"]["versions"][0]
    images = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["debug"]["properties"]["images"]
    assert images["items"]["pattern"] == "^" + access._IMAGE.pattern + "$"
    assert images["maxItems"] == access.MAX_DEBUG_IMAGES and images["items"]["maxLength"] == access.MAX_IMAGE


def test_both_admission_policies_check_the_ephemeralcontainers_right() -> None:
    for path in ("manifests/admission-policy.yaml", "charts/podssh/templates/admission-policy.yaml"):
        text = (REPO / path).read_text()
        assert "subresource('ephemeralcontainers')" in text and "check('update')" in text, path
        assert "!has(object.spec.debug) ||" in text, path
