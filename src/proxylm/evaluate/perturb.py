"""ReCode-style perturbations of code prompts and documents: seeded, small, meaning-preserving.

    perturb(problem, PerturbKind.SYNTAX, seed=3)    -> Problem (prompt, reference, test, entry point kept consistent)
    perturb(document_text, "docstring", seed=0)     -> str (for BPB deltas on clean vs perturbed documents)
    perturb_problems(problems, kind, seeds=range(5)) -> {seed: [Problem, ...]}, to feed passk.robust_passk

The four kinds follow ReCode's four families (Wang et al. 2022, arXiv 2212.10264):
- FUNC_NAME: a function renamed everywhere (for a Problem: its entry point, in prompt, reference and test)
  to camelCase <-> snake_case, or with a keyboard typo, two swapped letters, or changed letter case.
- FORMAT: blank lines inserted between statements, tab indentation, a bracketed line split after a comma,
  or a docstring turned into comments.
- SYNTAX: a parameter renamed (in code, docstring and comments), dead code inserted before a statement
  (`if False:` / `while False:` / `for _i_k in range(0):`), or a comparison's operands swapped (a < b -> b > a).
- DOCSTRING: word edits in docstrings and comments (keyboard typos, swapped letters, changed case, a space
  inside a word), leaving doctest lines, escapes and the code's identifiers alone.

Design choices:
- Deterministic in (input, kind, seed). A seed picks one of the kind's variants and where to apply it;
  a variant that cannot apply is skipped for the next, and an input with nothing to perturb comes back
  unchanged (FUNC_NAME on prose, say).
- A Problem is perturbed as one program (prompt + a marker comment + reference solution) that is split again
  afterwards, so renamings and indentation stay consistent and the reference still passes the tests. Only
  variants that change the prompt itself count.
- Python-aware edits use `tokenize` and `ast`, and their output must parse. Text that does not parse as
  Python (prose, other languages) gets the text-level variants: blank lines, tab indentation, word edits
  anywhere.
- Not implemented from ReCode: back-translation, synonyms and inflections (they need NLP models), and
  for -> while rewriting.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import enum
import inspect
import io
import keyword
import random
import re
import tokenize
import warnings
from collections.abc import Callable, Iterable
from typing import overload

from proxylm.evaluate.tasks import Problem

_MARKER = "#\ue000\n"  # splits prompt from reference; a comment line, so the joined text stays a program
_FSTRING_START = getattr(tokenize, "FSTRING_START", -1)
_FSTRING_END = getattr(tokenize, "FSTRING_END", -1)
_OPENERS, _CLOSERS = "([{", ")]}"
_CONTINUATION_WORDS = {"elif", "else", "except", "finally", "case"}
_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
_KEYBOARD = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk",
    "o": "ipkl", "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "j": "huikmn", "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv",
    "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}  # fmt: skip
_WORD = re.compile(r"(?<![\\\w])[A-Za-z]{3,}(?!\w)")  # prose words; not the tail of an escape like \n


class PerturbKind(enum.Enum):
    FUNC_NAME = "func_name"
    FORMAT = "format"
    SYNTAX = "syntax"
    DOCSTRING = "docstring"


@overload
def perturb(item: Problem, kind: PerturbKind | str, seed: int) -> Problem: ...
@overload
def perturb(item: str, kind: PerturbKind | str, seed: int) -> str: ...
def perturb(item, kind, seed):
    """A perturbed copy of a Problem or of a document's text."""
    kind = PerturbKind(kind)
    return perturb_problem(item, kind, seed) if isinstance(item, Problem) else perturb_text(item, kind, seed)


def perturb_problems(problems: Iterable[Problem], kind: PerturbKind | str, seeds: Iterable[int]) -> dict[int, list[Problem]]:
    problems = list(problems)
    return {seed: [perturb_problem(p, PerturbKind(kind), seed) for p in problems] for seed in seeds}


def perturb_text(text: str, kind: PerturbKind | str, seed: int) -> str:
    kind = PerturbKind(kind)
    rng = _rng(kind, seed)
    if kind is PerturbKind.FUNC_NAME:
        names = _defined_functions(text)
        if not names:
            return text
        old = rng.choice(names)
        return _rename(text, old, _new_name(old, rng, _words(text)))[0]
    return _apply_variants(text, kind, rng, last_row=text.count("\n") + 2)


def perturb_problem(problem: Problem, kind: PerturbKind | str, seed: int) -> Problem:
    kind = PerturbKind(kind)
    rng = _rng(kind, seed, salt=problem.task_id)  # problems draw independently under one seed
    if kind is PerturbKind.FUNC_NAME:
        return _rename_entry_point(problem, rng)
    if not problem.prompt.endswith("\n"):  # cannot be joined at a line boundary: perturb the prompt alone
        return dataclasses.replace(problem, prompt=_apply_variants(problem.prompt, kind, rng, problem.prompt.count("\n") + 2))
    joined = problem.prompt + _MARKER + problem.canonical_solution

    def changes_prompt(new: str) -> bool:
        return new.count(_MARKER) == 1 and new.split(_MARKER)[0] != problem.prompt

    new = _apply_variants(joined, kind, rng, last_row=problem.prompt.count("\n") + 1, accept=changes_prompt)
    prompt, canonical = new.split(_MARKER)
    return dataclasses.replace(problem, prompt=prompt, canonical_solution=canonical)


# --- machinery ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Source:
    """Text with what the variants need to know about it."""

    text: str
    last_row: int  # edits target rows before this one (the prompt of a joined problem)
    tokens: list[tokenize.TokenInfo] | None  # None when the text is not Python
    tree: ast.Module | None  # None when the text is not Python (does not parse)

    def __post_init__(self) -> None:
        self.lines = self.text.split("\n")
        self.line_starts = [0]
        for line in self.lines[:-1]:
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)

    def offset(self, row: int, col: int) -> int:
        return self.line_starts[row - 1] + col

    def byte_col_to_char(self, row: int, byte_col: int) -> int:
        return len(self.lines[row - 1].encode("utf-8")[:byte_col].decode("utf-8", "replace"))


Variant = Callable[[_Source, random.Random], "str | None"]


def _apply_variants(text: str, kind: PerturbKind, rng: random.Random, last_row: int, accept: Callable[[str], bool] = lambda _: True) -> str:
    tree = _parse(text)
    tokens = _tokenize(text) if tree is not None else None
    src = _Source(text, last_row, tokens, tree)
    variants = list(_VARIANTS[kind])
    rng.shuffle(variants)
    for variant in variants:
        new = variant(src, rng)
        if new is not None and new != text and (tree is None or _parse(new) is not None) and accept(new):
            return new
    return text


def _rng(kind: PerturbKind, seed: int, salt: str = "") -> random.Random:
    return random.Random(f"{kind.value}:{seed}:{salt}")


def _tokenize(text: str) -> list[tokenize.TokenInfo] | None:
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None


def _parse(text: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences and the like in documents
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError):
            return None


def _significant(tokens: list[tokenize.TokenInfo]) -> list[tokenize.TokenInfo]:
    return [t for t in tokens if t.type not in (tokenize.NL, tokenize.COMMENT)]


def _statement_strings(tokens: list[tokenize.TokenInfo]) -> list[tokenize.TokenInfo]:
    """String tokens that are whole statements (docstrings and the like)."""
    sig = _significant(tokens)
    line_start = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    return [
        t
        for i, t in enumerate(sig)
        if t.type == tokenize.STRING
        and (i == 0 or sig[i - 1].type in line_start)
        and (i + 1 < len(sig) and sig[i + 1].type in (tokenize.NEWLINE, tokenize.ENDMARKER))
    ]


def _string_rows(tokens: list[tokenize.TokenInfo], include_statements: bool) -> set[int]:
    """Rows that begin inside a multi-line string literal."""
    statements = set() if include_statements else {t.start for t in _statement_strings(tokens)}
    rows: set[int] = set()
    open_fstrings: list[int] = []
    for t in tokens:
        if t.type == tokenize.STRING and t.start not in statements:
            rows.update(range(t.start[0] + 1, t.end[0] + 1))
        elif t.type == _FSTRING_START:
            open_fstrings.append(t.start[0])
        elif t.type == _FSTRING_END and open_fstrings:
            rows.update(range(open_fstrings.pop() + 1, t.end[0] + 1))
    return rows


def _indent_unit(src: _Source) -> str:
    if src.tokens is not None:
        indents = [t.string for t in src.tokens if t.type == tokenize.INDENT]
    else:
        indents = [line[: len(line) - len(line.lstrip(" \t"))] for line in src.lines if line.strip()]
    indents = [i for i in indents if i]
    if any("\t" in i for i in indents):
        return "\t"
    return " " * min((len(i) for i in indents), default=4)


def _replace_spans(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", text))


# --- names -------------------------------------------------------------------------------------------------


def _rename_entry_point(problem: Problem, rng: random.Random) -> Problem:
    old = problem.entry_point
    taken = _words(problem.prompt + problem.canonical_solution + problem.test)
    new = _new_name(old, rng, taken)
    prompt, _ = _rename(problem.prompt, old, new)
    return dataclasses.replace(
        problem,
        prompt=prompt,
        canonical_solution=_rename(problem.canonical_solution, old, new)[0],
        test=_rename(problem.test, old, new)[0],
        entry_point=new,
    )


def _rename(text: str, old: str, new: str) -> tuple[str, int]:
    """Replace `old` as a whole name (not as an attribute) in code, strings and comments alike."""
    return re.subn(rf"(?<![\w.]){re.escape(old)}(?!\w)", new, text)


def _defined_functions(text: str) -> list[str]:
    names = re.findall(r"^[ \t]*(?:async[ \t]+)?def[ \t]+([A-Za-z_]\w*)", text, flags=re.MULTILINE)
    return [n for n in dict.fromkeys(names) if not (n.startswith("__") and n.endswith("__"))]


def _new_name(old: str, rng: random.Random, taken: set[str]) -> str:
    """A variant of `old` (style flip, typo, swapped letters, changed case) that is free to use."""
    makers = [_flip_style, _butter_finger, _swap_letters, _change_case]
    for _ in range(8):
        candidate = rng.choice(makers)(old, rng)
        if candidate and candidate != old and candidate.isidentifier() and candidate not in taken | _RESERVED:
            return candidate
    suffix = 2
    while f"{old}_{suffix}" in taken:
        suffix += 1
    return f"{old}_{suffix}"


def _flip_style(name: str, rng: random.Random) -> str | None:
    core = name.strip("_")
    if "_" in core:
        head, *rest = name.split("_")
        return head + "".join(p[:1].upper() + p[1:] for p in rest) if head else None
    if re.search(r"[a-z0-9][A-Z]", name):
        return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return None


def _butter_finger(word: str, rng: random.Random) -> str | None:
    spots = [i for i, ch in enumerate(word) if ch.lower() in _KEYBOARD]
    if not spots:
        return None
    i = rng.choice(spots)
    typo = rng.choice(_KEYBOARD[word[i].lower()])
    return word[:i] + (typo.upper() if word[i].isupper() else typo) + word[i + 1 :]


def _swap_letters(word: str, rng: random.Random) -> str | None:
    spots = [i for i in range(len(word) - 1) if word[i].isalpha() and word[i + 1].isalpha() and word[i] != word[i + 1]]
    if not spots:
        return None
    i = rng.choice(spots)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _change_case(word: str, rng: random.Random) -> str | None:
    spots = [i for i, ch in enumerate(word) if ch.isalpha()]
    if not spots:
        return None
    flips = {i for i in spots if rng.random() < 0.35} or {rng.choice(spots)}
    return "".join(ch.swapcase() if i in flips else ch for i, ch in enumerate(word))


# --- FORMAT ------------------------------------------------------------------------------------------------


def _blank_lines(src: _Source, rng: random.Random) -> str | None:
    """Empty lines after a few lines, never inside a string literal or after a backslash continuation."""
    inside = _string_rows(src.tokens, include_statements=True) if src.tokens is not None else set()
    rows = [
        r
        for r in range(1, min(src.last_row, len(src.lines)))
        if r + 1 not in inside and not src.lines[r - 1].endswith("\\")
    ]
    if not rows:
        return None
    chosen = rng.sample(rows, rng.randint(1, min(3, len(rows))))
    return _replace_spans(src.text, [(src.line_starts[r], src.line_starts[r], "\n") for r in chosen])


def _tab_indent(src: _Source, rng: random.Random) -> str | None:
    """Indentation written with tabs, one per indentation level (the whole text, to stay consistent)."""
    unit = _indent_unit(src)
    if unit == "\t" or any(line.startswith("\t") for line in src.lines):
        return None
    keep = _string_rows(src.tokens, include_statements=False) if src.tokens is not None else set()
    out = []
    for row, line in enumerate(src.lines, 1):
        body = line.lstrip(" ")
        width = len(line) - len(body)
        out.append(line if row in keep else "\t" * (width // len(unit)) + " " * (width % len(unit)) + body)
    return "\n".join(out)


def _split_line(src: _Source, rng: random.Random) -> str | None:
    """Break a bracketed line after a comma, continuing one level deeper."""
    if src.tokens is None:
        return None
    tokens, spots, depth, fstring_depth = src.tokens, [], 0, 0
    for i, t in enumerate(tokens[:-1]):
        fstring_depth += (t.type == _FSTRING_START) - (t.type == _FSTRING_END)
        if t.type == tokenize.OP and t.string in _OPENERS:
            depth += 1
        elif t.type == tokenize.OP and t.string in _CLOSERS:
            depth -= 1
        elif t.type == tokenize.OP and t.string == "," and depth > 0 and not fstring_depth and t.start[0] < src.last_row:
            after = tokens[i + 1]
            if after.start[0] == t.end[0] and after.type not in (tokenize.NL, tokenize.COMMENT) and after.string not in _CLOSERS:
                spots.append((t, after))
    if not spots:
        return None
    comma, after = rng.choice(spots)
    line = src.lines[comma.start[0] - 1]
    indent = line[: len(line) - len(line.lstrip(" \t"))] + _indent_unit(src)
    return _replace_spans(src.text, [(src.offset(*comma.end), src.offset(*after.start), "\n" + indent)])


def _doc_to_comments(src: _Source, rng: random.Random) -> str | None:
    """A function's or class's docstring rewritten as `#` comments."""
    docs = [d for d in _docstrings(src.tree) if d.lineno < src.last_row] if src.tree is not None else []
    whole_lines = [d for d in docs if _occupies_whole_lines(src, d)]
    if not whole_lines:
        return None
    doc = rng.choice(whole_lines)
    first = src.lines[doc.lineno - 1]
    indent = first[: len(first) - len(first.lstrip(" \t"))]
    comments = [f"{indent}# {line}".rstrip() for line in inspect.cleandoc(doc.value.value).split("\n")]
    start, end = src.line_starts[doc.lineno - 1], src.offset(doc.end_lineno, len(src.lines[doc.end_lineno - 1]))
    return _replace_spans(src.text, [(start, end, "\n".join(comments))])


def _docstrings(tree: ast.Module) -> list[ast.Expr]:
    owners = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [
        node.body[0]
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    ]


def _occupies_whole_lines(src: _Source, node: ast.expr) -> bool:
    before = src.lines[node.lineno - 1].encode("utf-8")[: node.col_offset]
    after = src.lines[node.end_lineno - 1].encode("utf-8")[node.end_col_offset :]
    return not before.strip() and not after.strip()


# --- SYNTAX ------------------------------------------------------------------------------------------------


def _rename_parameter(src: _Source, rng: random.Random) -> str | None:
    """One parameter renamed throughout its function: code, docstring and comments."""
    if src.tokens is None:
        return None
    params = [p for p in _parameters(src.tokens) if p.row < src.last_row and p.name not in ("self", "cls")]
    if not params:
        return None
    param = rng.choice(params)
    new = _new_variable_name(param.name, rng, _words(src.text))
    edits, depth, prev = [], 0, None
    for i in range(param.first, param.end):
        t = src.tokens[i]
        if t.type == tokenize.OP and t.string in _OPENERS + _CLOSERS:
            depth += 1 if t.string in _OPENERS else -1
        elif t.type == tokenize.NAME and t.string == param.name and _is_our_name(src.tokens, i, prev, depth, param.close):
            edits.append((src.offset(*t.start), src.offset(*t.end), new))
        elif t.type in (tokenize.STRING, tokenize.COMMENT) and len(param.name) > 1:  # one letter: too often a word
            renamed, count = _rename(t.string, param.name, new)
            if count:
                edits.append((src.offset(*t.start), src.offset(*t.end), renamed))
        if t.type not in (tokenize.NL, tokenize.COMMENT):
            prev = t
    return _replace_spans(src.text, edits) if edits else None


def _is_our_name(tokens: list[tokenize.TokenInfo], i: int, prev: tokenize.TokenInfo | None, depth: int, close: int) -> bool:
    """Not an attribute (`x.name`) and not a keyword argument of a call (`g(name=...)`, the callee's name)."""
    if prev is not None and prev.string == ".":
        return False
    if i < close:
        return True  # our own signature
    nxt = next((t for t in tokens[i + 1 :] if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
    keyword_arg = depth > 0 and nxt is not None and nxt.string == "=" and prev is not None and prev.string in ("(", ",")
    return not keyword_arg


def _new_variable_name(old: str, rng: random.Random, taken: set[str]) -> str:
    styles = [lambda: _new_name(old, rng, taken), lambda: f"var_{rng.randrange(10)}", lambda: _random_name(rng)]
    for _ in range(8):
        candidate = rng.choice(styles)()
        if candidate not in taken | _RESERVED:
            return candidate
    return _new_name(old, rng, taken)


def _random_name(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7)))


@dataclasses.dataclass(frozen=True)
class _Parameter:
    name: str
    row: int  # of the def
    first: int  # token index of `def`
    close: int  # token index of the signature's closing parenthesis
    end: int  # token index just past the body


def _parameters(tokens: list[tokenize.TokenInfo]) -> list[_Parameter]:
    found = []
    for i, t in enumerate(tokens):
        if t.type != tokenize.NAME or t.string != "def" or i + 2 >= len(tokens) or tokens[i + 2].string != "(":
            continue
        names, close = _signature_names(tokens, i + 2)
        end = _body_end(tokens, close)
        found += [_Parameter(n, t.start[0], i, close, end) for n in names]
    return found


def _signature_names(tokens: list[tokenize.TokenInfo], open_index: int) -> tuple[list[str], int]:
    names, depth, prev = [], 0, None
    for k in range(open_index, len(tokens)):
        t = tokens[k]
        if t.type == tokenize.OP and t.string in _OPENERS:
            depth += 1
        elif t.type == tokenize.OP and t.string in _CLOSERS:
            depth -= 1
            if depth == 0:
                return names, k
        elif depth == 1 and t.type == tokenize.NAME and prev is not None and prev.string in ("(", ",", "*", "**"):
            names.append(t.string)
        if t.type not in (tokenize.NL, tokenize.COMMENT):
            prev = t
    return names, len(tokens) - 1


def _body_end(tokens: list[tokenize.TokenInfo], close_index: int) -> int:
    """Index just past the function body that follows the signature closing at `close_index`."""
    k = close_index
    while k < len(tokens) and tokens[k].type != tokenize.NEWLINE:
        k += 1
    level = 0
    for j in range(k + 1, len(tokens)):
        if tokens[j].type == tokenize.INDENT:
            level += 1
        elif tokens[j].type == tokenize.DEDENT:
            level -= 1
            if level <= 0:
                return j
        elif level == 0 and tokens[j].type not in (tokenize.NL, tokenize.COMMENT):
            return j  # a one-line body
    return len(tokens)


def _dead_code(src: _Source, rng: random.Random) -> str | None:
    """A block that never runs, inserted before a statement at that statement's indentation."""
    if src.tokens is None:
        return None
    spots = [(row, indent) for row, indent in _statement_starts(src) if row <= src.last_row]
    spots = [s for s in spots if s[1]] or spots  # inside a function or block where there is one
    if not spots:
        return None
    row, indent = rng.choice(spots)
    taken = _words(src.text)
    name = next((f"_i_{k}" for k in rng.sample(range(10), 10) if f"_i_{k}" not in taken), "_i_dead")
    header = rng.choice(["if False:", "while False:", f"for {name} in range(0):"])
    body = rng.choice(["pass", f"{name} = 0"])
    block = f"{indent}{header}\n{indent}{_indent_unit(src)}{body}\n"
    return _replace_spans(src.text, [(src.line_starts[row - 1], src.line_starts[row - 1], block)])


def _statement_starts(src: _Source) -> list[tuple[int, str]]:
    """(row to insert at, indentation) before each statement that may be preceded by another one."""
    statement_strings = {t.start for t in _statement_strings(src.tokens)}
    spots, last_newline_row, at_start, after_decorator = [], 0, True, False
    for t in src.tokens:
        if t.type == tokenize.NEWLINE:
            last_newline_row, at_start = t.end[0], True
        elif at_start and t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            at_start = False
            ok = t.string not in _CONTINUATION_WORDS and t.start not in statement_strings and not after_decorator
            if ok and last_newline_row + 1 <= len(src.lines):
                spots.append((last_newline_row + 1, t.line[: t.start[1]]))
            after_decorator = t.string == "@"
    return spots


_SWAPPED = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: ">", ast.LtE: ">=", ast.Gt: "<", ast.GtE: "<=", ast.Is: "is", ast.IsNot: "is not"}
_LOW_PRECEDENCE = (ast.BoolOp, ast.IfExp, ast.Lambda, ast.NamedExpr, ast.Compare, ast.Yield, ast.YieldFrom)


def _swap_operands(src: _Source, rng: random.Random) -> str | None:
    """`a < b` -> `b > a` for one single-line, single-operator comparison."""
    if src.tree is None:
        return None
    compares = [
        node
        for node in ast.walk(src.tree)
        if isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and type(node.ops[0]) in _SWAPPED
        and node.lineno == node.end_lineno
        and node.lineno < src.last_row
    ]
    if not compares:
        return None
    node = rng.choice(compares)
    left, right = _segment(src, node.left), _segment(src, node.comparators[0])
    swapped = f"{right} {_SWAPPED[type(node.ops[0])]} {left}"
    start = src.offset(node.lineno, src.byte_col_to_char(node.lineno, node.col_offset))
    end = src.offset(node.end_lineno, src.byte_col_to_char(node.end_lineno, node.end_col_offset))
    return _replace_spans(src.text, [(start, end, swapped)])


def _segment(src: _Source, node: ast.expr) -> str:
    text = ast.get_source_segment(src.text, node) or ""
    return f"({text})" if isinstance(node, _LOW_PRECEDENCE) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)) else text


# --- DOCSTRING ---------------------------------------------------------------------------------------------


def _word_edits(src: _Source, rng: random.Random) -> str | None:
    """Typos, swapped letters, case changes or spacing changes in a few prose words."""
    words = _prose_words(src)
    if not words:
        return None
    edit = rng.choice([_butter_finger, _swap_letters, _change_case, _respace])
    chosen = [w for w in words if rng.random() < 0.15] or [rng.choice(words)]
    edits = []
    for start, end in chosen:
        new = edit(src.text[start:end], rng)
        if new is not None:
            edits.append((start, end, new))
    return _replace_spans(src.text, edits) if edits else None


def _respace(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word))
    return word[:i] + " " + word[i:]


def _prose_words(src: _Source) -> list[tuple[int, int]]:
    """(start, end) offsets of editable words: in docstrings and comments of Python, anywhere in other text."""
    if src.tokens is None:
        end = src.line_starts[src.last_row - 1] if src.last_row <= len(src.lines) else len(src.text)
        return [m.span() for m in _WORD.finditer(src.text, 0, end)]
    identifiers = {t.string for t in src.tokens if t.type == tokenize.NAME}
    spans = []
    for t in _statement_strings(src.tokens) + [t for t in src.tokens if t.type == tokenize.COMMENT]:
        if t.start[0] >= src.last_row:
            continue
        base = src.offset(*t.start)
        spans += [(base + a, base + b) for a, b in _prose_in(t.string) if t.string[a:b] not in identifiers]
    return spans


def _prose_in(literal: str) -> list[tuple[int, int]]:
    """Word spans of a string or comment, skipping doctest examples and their expected output."""
    spans, offset, in_example = [], 0, False
    for line in literal.split("\n"):
        stripped = line.strip().lstrip("\"'")
        if stripped.startswith((">>>", "...")):
            in_example = True
        elif not stripped:
            in_example = False
        elif not in_example:
            spans += [(offset + m.start(), offset + m.end()) for m in _WORD.finditer(line)]
        offset += len(line) + 1
    return spans


_VARIANTS: dict[PerturbKind, list[Variant]] = {
    PerturbKind.FORMAT: [_blank_lines, _tab_indent, _split_line, _doc_to_comments],
    PerturbKind.SYNTAX: [_rename_parameter, _dead_code, _swap_operands],
    PerturbKind.DOCSTRING: [_word_edits],
}
