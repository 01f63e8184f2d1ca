"""Code extraction from model output and grading against full test suites.

A model answers a code task either with a fenced block (chat models) or by
continuing the function prompt (base models). ``extract_code`` returns code
that, appended after the task prompt, defines the function either way: a full
definition re-defines the prompt's stub, a bare body continues it.
"""

from __future__ import annotations

import re

from moagraph.tasks.grading.sandbox import SandboxResult, arun_code, run_code

__all__ = [
    "agrade_program",
    "extract_code",
    "grade_humaneval",
    "grade_mbpp",
    "humaneval_program",
    "mbpp_program",
]

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
                if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", b, re.MULTILINE):
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
    """prompt + completion + the task's full ``check`` (called once)."""
    program = prompt + completion_code
    if not program.endswith("\n"):
        program += "\n"
    program += "\n" + test
    if not re.search(r"^\s*(?:test_check|check)\s*\(", test, re.MULTILINE):
        program += f"\ncheck({entry_point})\n"
    return program


def mbpp_program(code: str, test_list: list[str], test_setup_code: str = "") -> str:
    """setup + solution + every assert of ``test_list``."""
    parts = [test_setup_code.strip(), code.rstrip(), "\n".join(test_list)]
    return "\n\n".join(p for p in parts if p) + "\n"


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
    return run_code(humaneval_program(prompt, code, test, entry_point), timeout_s, memory_mb)


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
    return run_code(mbpp_program(code, test_list, test_setup_code), timeout_s, memory_mb)


async def agrade_program(program: str, timeout_s: float = 10.0, memory_mb: int = 512) -> SandboxResult:
    """Async form for evaluators that grade many answers concurrently."""
    return await arun_code(program, timeout_s, memory_mb)
