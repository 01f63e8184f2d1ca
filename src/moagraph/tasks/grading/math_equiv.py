"""Final-answer extraction and equivalence for math tasks (GSM8K, MATH).

``equivalent`` is what vote nodes use to cluster answers, so it is called
O(n^2) times per vote: it is symmetric, caches normalisations and verdicts,
settles plain numbers without sympy, and only then asks math-verify (with a
small sympy fallback when math-verify is missing or fails).
"""

from __future__ import annotations

import ast
import functools
import math
import re
import threading
from fractions import Fraction

__all__ = [
    "equivalent",
    "extract_boxed",
    "extract_json_answer",
    "extract_math_answer",
    "gsm8k_reference",
    "normalize_answer",
    "numeric_answer",
]

_MAX_SYMBOLIC_LEN = 300  # longer answers are compared as strings only


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces allowed."""
    if not text:
        return None
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = idx + (6 if text.startswith("\\boxed", idx) else 5)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":  # "\boxed 5"
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{" and text[j - 1] != "\\":
            depth += 1
        elif c == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: the output was cut off


_HASH_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?:\n|$|\.\s|\.$)", re.IGNORECASE
)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


# ZeroEval-style replies are JSON: {"reasoning": "...", "answer": "..."}.
_JSON_ANSWER_RE = re.compile(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)"')
_JSON_ANSWER_BARE_RE = re.compile(r'"answer"\s*:\s*(-?\d[\d,]*(?:\.\d+)?)\s*[,}\n]')


def extract_json_answer(text: str) -> str | None:
    """The first ``"answer": "..."`` field of a JSON-formatted reply (what ZeroEval
    asks models for and grades), or None.

    Only ``\\\\`` and ``\\"`` are unescaped: models often write LaTeX with single
    backslashes inside JSON strings (``"\\frac{1}{2}"``), which a JSON parser
    would turn into a form feed.
    """
    if not text or '"answer"' not in text:
        return None
    m = _JSON_ANSWER_RE.search(text)
    bare = _JSON_ANSWER_BARE_RE.search(text)
    if bare and (m is None or bare.start() < m.start()):
        return bare.group(1)
    if m is None:
        return None
    s = m.group(1).replace("\\\\", "\x00").replace('\\"', '"').replace("\\/", "/")
    s = s.replace("\x00", "\\").strip()
    return s or None


def extract_math_answer(text: str) -> str | None:
    """Final answer of a math solution: the first JSON ``"answer"`` field (ZeroEval's
    reply format), else the last ``\\boxed{}``, else ``#### N``, else
    "the answer is X", else the last number. None if there is nothing."""
    if not text:
        return None
    js = extract_json_answer(text)
    if js:
        return js
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    hashes = _HASH_RE.findall(text)
    if hashes:
        return hashes[-1].strip()
    found = _ANSWER_IS_RE.findall(text)
    if found:
        ans = found[-1].strip().strip("$").strip()
        ans = re.sub(r"^\\\(|\\\)$", "", ans).strip()
        if ans:
            return ans
    nums = _NUMBER_RE.findall(text)
    if nums:
        return nums[-1].rstrip(".")
    return None


_NUM_IN_TEXT_RE = re.compile(r"-?\d+(?:\.\d+)?")


def numeric_answer(ans: str | None) -> str | None:
    """The number a free-text numeric answer states, or None if it is not clear.

    For tasks whose answers are plain numbers (GSM8K): "84 grains" -> "84",
    "The friends found 30 eggs." -> "30", "`$26`" -> "26", "20 + 10 + 10 = 40"
    -> "40" (after the last "="), "2:00 pm" -> "2", "6 pizzas (3 cheese and 3
    pepperoni)" -> "6" (a leading number followed by words). Several numbers
    with no such structure ("3 and 4") give None.
    """
    if ans is None:
        return None
    s = str(ans).replace("\\$", "").replace("$", "").replace("`", "").replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    s = re.sub(r"\b(\d{1,2}):00\b", r"\1", s)
    nums = _NUM_IN_TEXT_RE.findall(s)
    if len(nums) == 1:
        return nums[0]
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)\s*[A-Za-z%]", s)
    return m.group(1) if m and nums else None


def gsm8k_reference(answer_field: str) -> str:
    """The number after ``####`` in a GSM8K ``answer`` field, commas removed."""
    m = _HASH_RE.search(answer_field)
    if not m:
        raise ValueError("GSM8K answer field has no '#### N' line; is this a GSM8K record?")
    return m.group(1).strip().replace(",", "")


# --------------------------------------------------------------------------- normalisation

_UNIT_WORDS = (
    "dollars|dollar|cents|cent|units|unit|degrees|degree|inches|inch|feet|foot|ft|yards|yard|"
    "miles|mile|meters|meter|metres|metre|cm|mm|km|kg|grams|gram|pounds|pound|lbs|lb|"
    "hours|hour|hrs|minutes|minute|mins|min|seconds|second|sec|days|day|weeks|week|"
    "years|year|months|month|percent|sq|square|cubic|liters|liter|litres|ml|mph|"
    "people|students|apples|eggs|points|times|ways|pieces|books|cookies|marbles|cups"
)
_TRAILING_UNIT_RE = re.compile(
    rf"^(.*?\d)\s*(?:(?:{_UNIT_WORDS})\b(?:\s*\^\s*\{{?[23]\}}?)?\.?\s*)+$", re.IGNORECASE
)
# "5 \\text{m}^2": a number followed by a \\text{} unit (single letters allowed here only)
_TEXT_UNIT_RE = re.compile(
    r"^(.*?\d)\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z. ]*\}(?:\s*\^\s*\{?[23]\}?)?$"
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_ASSIGN_RE = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=])")
_PLAIN_NUM_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$")
_FRAC_NUM_RE = re.compile(r"^([-+]?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^([-+]?\d+)\s*/\s*(\d+)$")


@functools.lru_cache(maxsize=65536)
def normalize_answer(ans: str) -> str:
    """Canonical string form of an answer: drops LaTeX decoration, units,
    thousands separators, "x =" prefixes, percent and degree signs."""
    s = str(ans).strip()
    s = s.replace("\\$", "").replace("$", "").strip()
    inner = extract_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
    if inner is not None:
        s = inner
    if s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
        s = s[2:-2]
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"(?<!\\)\\[,;:! ]", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac{1}2
    s = re.sub(r"\\sqrt\s*(\d+)", r"\\sqrt{\1}", s)  # \sqrt3
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _TEXT_UNIT_RE.sub(r"\1", s)
    for _ in range(3):  # \text{...} may hold units or the whole answer
        s = _TEXT_RE.sub(lambda m: " " + m.group(1) + " ", s)
    s = s.strip().rstrip(".").strip()
    m = _TRAILING_UNIT_RE.match(s)
    if m:
        s = m.group(1).strip()
    if _ASSIGN_RE.match(s) and s.count("=") == 1:
        s = _ASSIGN_RE.sub("", s, count=1)
    s = re.sub(r"\s+", " ", s).strip()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if _PLAIN_NUM_RE.match(s):
        s = _canonical_number(s)
    s = re.sub(r"\s*([,=()\[\]{}+*/^-])\s*", r"\1", s)
    return s


def _canonical_number(s: str) -> str:
    try:
        v = float(s)
    except ValueError:
        return s
    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return s.lstrip("+")


def _as_fraction(s: str) -> Fraction | None:
    """Exact value of a plain number or a simple fraction (``3/4``, ``\\frac{3}{4}``)."""
    if _PLAIN_NUM_RE.match(s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    m = _FRAC_NUM_RE.match(s)
    if m:
        if m.group(2) is not None:
            sign, num, den = m.group(1), int(m.group(2)), int(m.group(3))
        else:
            sign, num, den = "", int(m.group(4)), int(m.group(5))
        if den == 0:
            return None
        v = Fraction(num, den)
        return -v if sign == "-" else v
    return None


def _decimals(s: str) -> int:
    return len(s.split(".", 1)[1]) if _PLAIN_NUM_RE.match(s) and "." in s else 0


def _numbers_equal(a: str, fa: Fraction, b: str, fb: Fraction) -> bool:
    if fa == fb:
        return True
    # A long decimal is a float rendering of the other: 0.333333 vs 1/3.
    for x, fx, fy in ((a, fa, fb), (b, fb, fa)):
        d = _decimals(x)
        if d >= 6 and round(fy, d) == fx:
            return True
    return False


_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")


@functools.lru_cache(maxsize=65536)
def _free_letters(s: str) -> frozenset[str]:
    """Letters left once LaTeX commands are removed: the answer's variables."""
    return frozenset(c for c in _COMMAND_RE.sub(" ", s) if c.isalpha())


def _shape(s: str) -> tuple[int, int, int, int, tuple[str, ...]]:
    """(commas outside any bracket, commas inside the outermost brackets): tuples,
    intervals and lists of different lengths are never equal."""
    depth = top = inner = 0
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ",":
            if depth <= 0:
                top += 1
            elif depth == 1:
                inner += 1
    # matrix cells and rows; subscripts (bases like 52_8, indices like x_1)
    subs = tuple(sorted(re.findall(r"_\{?(\w+)\}?", s)))
    return top, inner, s.count("&"), s.count("\\\\"), subs


_FAST_COMMANDS = frozenset({"frac", "sqrt", "pi", "cdot", "times"})
_TOKEN_RE = re.compile(r"\s*(\d+\.?\d*|\.\d+|\*\*|[-+*/()]|[A-Za-z]+)")


def _fast_tokens(s: str) -> list[str] | None:
    """Tokens of a constant or polynomial-like expression with explicit ``*``."""
    if any(c not in _FAST_COMMANDS for c in re.findall(r"\\([a-zA-Z]+)", s)):
        return None
    text = _latex_to_sympy_text(s)
    raw: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            if not text[pos:].strip():
                break
            return None
        tok = m.group(1)
        pos = m.end()
        if tok.isalpha() and tok not in ("sqrt", "pi"):
            raw.extend(re.findall(r"sqrt|pi|[A-Za-z]", tok))  # "xy" is x*y
        else:
            raw.append(tok)
    out: list[str] = []
    for tok in raw:
        if out:
            prev = out[-1]
            prev_operand = (
                prev == ")"
                or prev[0].isdigit()
                or prev[0] == "."
                or (prev.isalpha() and prev != "sqrt")
            )
            if prev_operand and (tok == "(" or tok[0].isdigit() or tok.isalpha()):
                out.append("*")
        out.append(tok)
    return out


def _point_value(letter: str, k: int) -> float:
    # Deterministic, irrational-looking sample points in [1.1, 2.1].
    return 1.1 + ((ord(letter) * 7919 + (k + 1) * 104729) % 997) / 997


@functools.lru_cache(maxsize=65536)
def _fast_values(s: str) -> tuple[float, float] | None:
    """Values of an expression at two sample points of its variables, without
    sympy (constants give the same value twice), or None when the expression
    is outside what the checked AST evaluator handles."""
    tokens = _fast_tokens(s)
    if not tokens:
        return None
    try:
        tree = ast.parse(" ".join(tokens), mode="eval")
        v0 = _eval_node(tree.body, 0)
        v1 = _eval_node(tree.body, 1)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
        return None
    if not (math.isfinite(v0) and math.isfinite(v1)):
        return None
    return v0, v1


def _eval_node(node: ast.AST, k: int) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval_node(node.operand, k)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        x, y = _eval_node(node.left, k), _eval_node(node.right, k)
        if isinstance(node.op, ast.Add):
            return x + y
        if isinstance(node.op, ast.Sub):
            return x - y
        if isinstance(node.op, ast.Mult):
            return x * y
        if isinstance(node.op, ast.Div):
            return x / y
        if isinstance(node.op, ast.Pow):
            if abs(y) > 64 or abs(x) > 1e6:
                raise ValueError("exponent too large for the fast path")
            r = x**y
            if isinstance(r, complex):
                raise TypeError("complex")
            return float(r)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "sqrt"
        and len(node.args) == 1
    ):
        v = _eval_node(node.args[0], k)
        if v < 0:
            raise ValueError("sqrt of a negative number")
        return math.sqrt(v)
    if isinstance(node, ast.Name):
        if node.id == "pi":
            return math.pi
        if len(node.id) == 1:
            return _point_value(node.id, k)
    raise ValueError("unsupported expression")


# --------------------------------------------------------------------------- equivalence


def equivalent(a: object, b: object) -> bool:
    """Whether two final answers are the same mathematical object. Symmetric."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(str(a)), normalize_answer(str(b))
    if not na or not nb:
        return False
    if na == nb:
        return True
    if _is_words(na) and _is_words(nb):
        # Plain words or identifiers ("Monday", 'ccwcu'): strings, not products of
        # symbols (math-verify would call 'ccwcu' and 'cwcuc' equal).
        return _word_key(na) == _word_key(nb)
    fa, fb = _as_fraction(na), _as_fraction(nb)
    if fa is not None and fb is not None:
        return _numbers_equal(na, fa, nb, fb)
    if len(na) > _MAX_SYMBOLIC_LEN or len(nb) > _MAX_SYMBOLIC_LEN:
        return False
    # Cheap structural filters before any sympy: different variables, or a
    # different number of tuple/list entries, cannot be the same answer.
    if _free_letters(na) != _free_letters(nb) or _shape(na) != _shape(nb):
        return False
    va, vb = _fast_values(na), _fast_values(nb)
    if va is not None and vb is not None:
        return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(va, vb))
    ta, tb = _split_top_level(na), _split_top_level(nb)
    if ta is not None and tb is not None:  # tuples / intervals: ends and parts must match
        if (na[0], na[-1]) != (nb[0], nb[-1]) or len(ta) != len(tb):
            return False
        return all(equivalent(p, q) for p, q in zip(ta, tb, strict=True))
    x, y = (na, nb) if na <= nb else (nb, na)
    return _symbolic_equal(x, y)


_WORDS_RE = re.compile(r"^['\"`]?[A-Za-z]+(?:[ ,'\"`]+[A-Za-z]+)*['\"`]?$")
_LONG_RUN_RE = re.compile(r"[A-Za-z]{2,}")


def _is_words(s: str) -> bool:
    """Letters only (spaces, commas, quotes between), with a run of two or more letters:
    a word, not a product of single-letter variables like ``x y``."""
    return bool(_WORDS_RE.match(s)) and bool(_LONG_RUN_RE.search(s))


def _word_key(s: str) -> str:
    return " ".join(re.sub(r"['\"`,]", " ", s).casefold().split())


@functools.lru_cache(maxsize=65536)
def _symbolic_equal(x: str, y: str) -> bool:
    try:
        return _math_verify_equal(x, y)
    except Exception:
        return _sympy_equal(x, y)


def _timeouts() -> int | None:
    # math-verify's timeouts use SIGALRM, which only works in the main thread.
    return 1 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)
def _mv_parse(s: str) -> tuple[object, ...]:
    from math_verify import parse

    return tuple(parse(f"${s}$", parsing_timeout=_timeouts()))


def _math_verify_equal(x: str, y: str) -> bool:
    from math_verify import verify

    px, py = _mv_parse(x), _mv_parse(y)
    if not px or not py:
        raise ValueError("math-verify could not parse an answer")
    t = _timeouts()
    return bool(verify(list(px), list(py), timeout_seconds=t)) or bool(
        verify(list(py), list(px), timeout_seconds=t)
    )


def _latex_to_sympy_text(s: str) -> str:
    for _ in range(4):
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\[([^\]]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    s = re.sub(r"\\sqrt(\d+)", r"sqrt(\1)", s)
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", "pi").replace("^", "**")
    s = s.replace("{", "(").replace("}", ")").replace("\\", "")
    return s


def _split_top_level(s: str) -> list[str] | None:
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    parts, depth, cur = [], 0, ""
    for c in s[1:-1]:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts if len(parts) > 1 else None


def _sympy_equal(x: str, y: str) -> bool:
    """Fallback: structural tuples/intervals, then simplify(a - b) == 0."""
    tx, ty = _split_top_level(x), _split_top_level(y)
    if tx is not None or ty is not None:
        if tx is None or ty is None or len(tx) != len(ty) or (x[0], x[-1]) != (y[0], y[-1]):
            return False
        return all(equivalent(p, q) for p, q in zip(tx, ty, strict=True))
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )

        tr = (*standard_transformations, implicit_multiplication_application)
        ex = parse_expr(_latex_to_sympy_text(x), transformations=tr, evaluate=True)
        ey = parse_expr(_latex_to_sympy_text(y), transformations=tr, evaluate=True)
        return bool(sympy.simplify(ex - ey) == 0)
    except Exception:
        return False
