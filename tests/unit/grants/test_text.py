"""printable(): what reaches a terminal from elsewhere holds no control character."""

from __future__ import annotations

from sshserver.grants.text import printable


def test_control_characters_become_spaces_and_the_rest_stays() -> None:
    assert printable("a\x1b]0;title\x07b\r\nc\x7fd\x9be\u2028f") == "a ]0;title b  c d e f"
    assert printable("ünïcode → fine, tabs\tno") == "ünïcode → fine, tabs no"
    assert printable("") == ""
