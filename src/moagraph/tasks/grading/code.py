"""Code extraction from model output and grading against full test suites.

A model answers a code task either with a fenced block (chat models) or by
continuing the function prompt (base models). ``extract_code`` returns code
that, appended after the task prompt, defines the function either way: a full
definition re-defines the prompt's stub, a bare body continues it.

Grading never appends the tests to the model's code: :func:`humaneval_tests`
and :func:`mbpp_tests` split a problem into what the candidate process runs
(prompt/setup + answer) and what only the judge sees (the asserts), and
:func:`run_test_program` runs them with :func:`~moagraph.tasks.grading.sandbox.run_tests`.
``humaneval_program``/``mbpp_program`` (one program holding both) remain for
trusted code such as reference solutions; a model's code in them could skip
or fake the tests.
"""

from __future__ import annotations

import ast
import builtins
import re
import warnings
from dataclasses import dataclass

from moagraph.tasks.grading.sandbox import SandboxResult, arun_code, run_tests

__all__ = [
    "TestProgram",
    "agrade_program",
    "extract_code",
    "grade_humaneval",
    "grade_mbpp",
    "humaneval_program",
    "humaneval_tests",
    "mbpp_program",
    "mbpp_tests",
    "run_test_program",
]


@dataclass(frozen=True)
class TestProgram:
    """A code problem split for :func:`run_tests`.

    ``code`` runs in the candidate process; ``prelude`` (trusted task code)
    then ``tests`` run in the judge, where ``names`` call into the candidate.
    """

    __test__ = False  # not a pytest class

    code: str
    tests: str
    prelude: str = ""
    names: tuple[str, ...] = ()


_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_MAIN_RE = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:.*", re.DOTALL | re.MULTILINE)


def extract_code(text: str, entry_point: str | None = None) -> str:
    """Python code in a model's output.

    * fenced blocks: the first ``python``/unlabelled block that defines
      ``entry_point`` (else the first python block, else the first block);
    * no fence: the text itself, treated as a continuation of the prompt;
      a continuation ends at the first top-level line that is not a def,
      import, decorator or class (prose or test code the model rambled on with).
    ``if __name__ == "__main__":`` blocks are dropped: they would run (and may
    ``exit()``) before the tests.
    """
    if not text:
        return ""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    if blocks:
        py = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
        pool = py or [b for _, b in blocks]
        chosen = pool[0]
        if entry_point:
            for b in pool:
                if re.search(
                    rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.MULTILINE
                ):
                    chosen = b
                    break
        return _MAIN_RE.sub("", chosen).rstrip() + "\n"
    return _trim_continuation(text)


def _trim_continuation(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    in_def = False
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        top_level = not line[0].isspace()
        if top_level:
            if re.match(r"(?:async\s+)?def |class |@|import |from \S+ import ", line):
                in_def = line.startswith(("def", "async", "class", "@"))
                out.append(line)
                continue
            if in_def and line.startswith((")", "]", "}")):
                out.append(line)
                continue
            break  # prose, tests, `if __name__`, prints: the answer is over
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


def humaneval_program(prompt: str, completion_code: str, test: str, entry_point: str) -> str:
    """prompt + completion + the task's full ``check`` (called once), as one program.

    Only for trusted code: grade model answers with :func:`humaneval_tests`.
    """
    program = prompt + completion_code
    if not program.endswith("\n"):
        program += "\n"
    return program + "\n" + _humaneval_check(test, entry_point)


def _humaneval_check(test: str, entry_point: str) -> str:
    if not re.search(r"^\s*(?:test_check|check)\s*\(", test, re.MULTILINE):
        test += f"\ncheck({entry_point})\n"
    return test


def humaneval_tests(prompt: str, completion_code: str, test: str, entry_point: str) -> TestProgram:
    """The candidate runs prompt + completion; the judge runs the prompt (its
    helpers, e.g. ``poly`` or ``encode_cyclic``) and the full ``check``, with
    ``entry_point`` calling into the candidate."""
    code = prompt + completion_code
    if not code.endswith("\n"):
        code += "\n"
    return TestProgram(code, _humaneval_check(test, entry_point), prompt, (entry_point,))


def mbpp_program(code: str, test_list: list[str], test_setup_code: str = "") -> str:
    """setup + solution + every assert of ``test_list``, as one program (trusted code only)."""
    parts = [test_setup_code.strip(), code.rstrip(), "\n".join(test_list)]
    return "\n\n".join(p for p in parts if p) + "\n"


def mbpp_tests(
    code: str,
    test_list: list[str],
    test_setup_code: str = "",
    entry_point: str | None = None,
    reference_code: str = "",
) -> TestProgram:
    """The candidate runs setup + solution; the judge runs setup + the asserts.

    The asserts call functions by name (``assert remove_Occ("hello","l") == "heo"``).
    Those the task's reference solution defines (even one named ``sum``) are the
    candidate's; so is ``entry_point`` unless it is a builtin (``assert int(f(5)) == 35``
    must use the real ``int``), and any other name the judge cannot resolve.
    """
    setup = test_setup_code.strip()
    candidate = "\n\n".join(p for p in (setup, code.rstrip()) if p) + "\n"
    tests = "\n".join(test_list) + "\n"
    names = [entry_point] if entry_point and not hasattr(builtins, entry_point) else []
    for name in sorted(_top_level_defs(reference_code) & _names_used(tests)):
        if name not in names:
            names.append(name)
    return TestProgram(candidate, tests, setup, tuple(names))


def _parse(code: str) -> ast.Module | None:
    with warnings.catch_warnings():  # MBPP solutions hold regexes like "\w" in plain strings
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError):
            return None


def _top_level_defs(code: str) -> set[str]:
    tree = _parse(code)
    if tree is None:
        return set()
    return {
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }


def _names_used(code: str) -> set[str]:
    tree = _parse(code)
    if tree is None:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def run_test_program(
    tp: TestProgram, timeout_s: float = 10.0, memory_mb: int = 512, **kwargs: object
) -> SandboxResult:
    """Run a :class:`TestProgram` in the sandbox (candidate and judge apart)."""
    return run_tests(
        tp.code,
        tp.tests,
        prelude=tp.prelude,
        names=tp.names,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        **kwargs,  # type: ignore[arg-type]
    )


def grade_humaneval(
    text: str,
    prompt: str,
    test: str,
    entry_point: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> SandboxResult:
    """Run a model's HumanEval answer against the full ``check``."""
    code = extract_code(text, entry_point)
    return run_test_program(humaneval_tests(prompt, code, test, entry_point), timeout_s, memory_mb)


def grade_mbpp(
    text: str,
    test_list: list[str],
    test_setup_code: str = "",
    entry_point: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> SandboxResult:
    """Run a model's MBPP answer against all of the task's asserts."""
    code = extract_code(text, entry_point)
    tp = mbpp_tests(code, test_list, test_setup_code, entry_point)
    return run_test_program(tp, timeout_s, memory_mb)


async def agrade_program(
    program: str, timeout_s: float = 10.0, memory_mb: int = 512
) -> SandboxResult:
    """Async :func:`run_code` of a whole program (its own word that it ran to the end:
    not for grading model code, see :func:`run_test_program`)."""
    return await arun_code(program, timeout_s, memory_mb)
