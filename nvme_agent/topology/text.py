"""Device strings in human text: the one escaping function, and control-character removal.

Everything a disk carries (labels, serials, NQNs, partition names, ...) and everything a local
user controls (process names, command lines) may hold newlines, terminal escapes or a leading
``<N>``.  journald splits a stream on newlines and reads ``<N>`` at the start of a line as the
priority, and a terminal obeys escapes: a raw value could forge log lines or redraw a screen.

* :func:`escape` turns such a value into one printable line, unambiguously: unsafe characters
  and the backslash become Python-style escapes (``\\x0a``, ``\\u202e``, ``\\\\``), and a
  leading ``<`` becomes ``\\x3c``.  Use it wherever a device string enters a human message.
* :func:`one_line` is the same for a message that is already composed (nothing is doubled):
  the last line of defence where text leaves the process.
* :func:`strip_unsafe` removes the unsafe characters (for hook environment values, whose raw
  form is kept beside them).

"Unsafe" is one table, :data:`UNSAFE_CATEGORIES`, shared with the policy's path components.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories never shown raw: control (C0, DEL, C1), format (bidi overrides,
#: zero-width), surrogates (undecodable bytes), private use, unassigned, line and paragraph
#: separators.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_unsafe(ch: str) -> bool:
    """True for a character that must never reach a log line or a terminal raw."""
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def _code(ch: str) -> str:
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _escape_each(text: str, *, backslash: bool) -> str:
    """The escaping, character by character."""
    out = []
    for ch in text:
        if is_unsafe(ch):
            out.append(_code(ch))
        elif backslash and ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def _escape_chars(text: str, *, backslash: bool) -> str:
    # Every unsafe category is one str.isprintable() rejects, so printable text (nearly all
    # of it) needs no look at each character: a C-speed test instead of a Python loop, which
    # was the largest cost of logging a change (issue 13).
    if text.isprintable():
        result = text.replace("\\", "\\\\") if backslash else text
    else:
        result = _escape_each(text, backslash=backslash)
    # journald reads "<N>" at the start of a stream line as the priority.
    return "\\x3c" + result[1:] if result.startswith("<") else result


def escape(value: object) -> str:
    """``value`` (a device string, or anything ``str()`` makes one) as one safe, unambiguous line.

    ``None`` becomes ``-``, so that a missing value is visible and never the text ``None``.
    """
    if value is None:
        return "-"
    return _escape_chars(str(value), backslash=True)


def one_line(message: str) -> str:
    """A composed message as one line: unsafe characters escaped, backslashes left alone.

    Idempotent, and the identity on text made of :func:`escape` output and plain words.
    """
    return _escape_chars(message, backslash=False)


def strip_unsafe(value: str) -> str:
    """``value`` without its unsafe characters (newlines, escapes, bidi overrides, ...)."""
    return "".join(ch for ch in value if not is_unsafe(ch))
