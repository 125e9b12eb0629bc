# Private to the collection: may change without notice.
"""Traefik v3 router rules: the matchers hostmesh accepts and a parser that checks a rule.

Standard library only: it runs on the nodes under the system Python.
"""

from __future__ import annotations

import re

HTTP_MATCHERS = {
    "Host": (1, 1),
    "HostRegexp": (1, 1),
    "Path": (1, 1),
    "PathPrefix": (1, 1),
    "PathRegexp": (1, 1),
    "Method": (1, 1),
    "Header": (2, 2),
    "HeaderRegexp": (2, 2),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
    "ClientIP": (1, 1),
}
TCP_MATCHERS = {
    "HostSNI": (1, 1),
    "HostSNIRegexp": (1, 1),
    "ClientIP": (1, 1),
    "ALPN": (1, 1),
}

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!(),])|(?P<str>`[^`]*`|\"(?:[^\"\\]|\\.)*\")|(?P<id>[A-Za-z]+))"
)


def _tokenize(rule):
    tokens, pos = [], 0
    rule = rule.rstrip()
    while pos < len(rule):
        match = _TOKEN_RE.match(rule, pos)
        if not match or match.end() == pos:
            raise ValueError(f"unexpected character {rule[pos : pos + 1]!r} at offset {pos}")
        pos = match.end()
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
    return tokens


def parse_rule(rule, matchers=None):
    """Check a Traefik v3 router rule; return the list of (matcher, args).

    Raises ValueError saying what is wrong. Grammar: matcher calls with
    backtick- or double-quoted arguments combined by ``&&``, ``||``, ``!`` and
    parentheses.
    """
    matchers = HTTP_MATCHERS if matchers is None else matchers
    if not isinstance(rule, str) or not rule.strip():
        raise ValueError("rule is empty")
    tokens = _tokenize(rule)
    found = []
    pos = [0]

    def peek():
        return tokens[pos[0]] if pos[0] < len(tokens) else (None, None)

    def take(kind=None, value=None):
        tok = peek()
        if tok[0] is None:
            raise ValueError("rule ends too early")
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            raise ValueError(f"expected {value or kind}, found {tok[1]!r}")
        pos[0] += 1
        return tok

    def expr():
        term()
        while peek() == ("op", "||"):
            take()
            term()

    def term():
        factor()
        while peek() == ("op", "&&"):
            take()
            factor()

    def factor():
        tok = peek()
        if tok == ("op", "!"):
            take()
            factor()
        elif tok == ("op", "("):
            take()
            expr()
            take("op", ")")
        elif tok[0] == "id":
            name = take()[1]
            if name not in matchers:
                raise ValueError(
                    "unknown matcher {} (known: {})".format(name, ", ".join(sorted(matchers)))
                )
            take("op", "(")
            args = []
            if peek() != ("op", ")"):
                args.append(take("str")[1][1:-1])
                while peek() == ("op", ","):
                    take()
                    args.append(take("str")[1][1:-1])
            take("op", ")")
            low, high = matchers[name]
            if not low <= len(args) <= high:
                raise ValueError(f"{name} takes {high} argument(s), got {len(args)}")
            if any(not a for a in args):
                raise ValueError(f"{name} has an empty argument")
            found.append((name, args))
        elif tok[0] is None:
            raise ValueError("rule ends too early")
        else:
            raise ValueError(f"expected a matcher, found {tok[1]!r}")

    expr()
    if pos[0] != len(tokens):
        raise ValueError(f"unexpected {tokens[pos[0]][1]!r} after the end of the rule")
    return found
