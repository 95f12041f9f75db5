"""Text fit to print: control characters in names and values a trial, a script or a pushed configuration chose.

A hyperparameter name, a trial's failure reason or a log line can hold ANSI escapes, CR/LF, bidi overrides:
printed raw they set a terminal's title, clear its screen, forge a line of progress.log or a header-like line
in a mail. Everything we print or write for a person goes through ``escape`` (one line: CR/LF too) or
``escape_lines`` (text whose line breaks are ours: each line escaped, the LFs kept).

The standard library only: trialdir-style code and the callback plugin (which keeps its own copy of the
pattern, callback_plugins/autotune_progress.py; a unit test pins the two) may use the same rules.
"""
import email.errors
import email.headerregistry
import re

# C0 and C1 controls and DEL, the Unicode line and paragraph separators, and the bidi controls that
# reorder what a reader sees (U+200E/F, U+202A-E, U+2066-9).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match):
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value):
    """``value`` as one printable line: every control character written as a Python-style escape (\\x1b, \\n)."""
    return CONTROL.sub(_escaped, value if isinstance(value, str) else str(value))


def escape_lines(text):
    """Multi-line text we assembled ourselves: each line escaped (CR, ESC, ...), the line feeds between kept."""
    return "\n".join(escape(line) for line in str(text).split("\n"))


def is_printable(value):
    """True when ``value`` (a str) holds no control character: what a mail header or an address may hold."""
    return isinstance(value, str) and not CONTROL.search(value)


def valid_address(text):
    """True for a bare e-mail address (local@domain) that can stand in a mail header: no control character,
    no display name, no list; checked by the standard library's address parser (email.headerregistry)."""
    if not is_printable(text) or text != text.strip():
        return False
    try:
        address = email.headerregistry.Address(addr_spec=text)
    except (ValueError, IndexError, email.errors.HeaderParseError):
        return False
    return bool(address.username and address.domain)
