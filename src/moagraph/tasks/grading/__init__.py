"""Pure grading functions, usable without the Task classes.

* math: :func:`extract_math_answer`, :func:`equivalent` (math-verify + sympy)
* multiple choice: :func:`extract_choice`
* code: :func:`extract_code`, :func:`run_tests` / :func:`run_code` (isolated sandbox)
"""

from moagraph.tasks.grading.choice import choice_equivalent, extract_choice
from moagraph.tasks.grading.code import (
    TestProgram,
    agrade_program,
    extract_code,
    grade_humaneval,
    grade_mbpp,
    humaneval_program,
    humaneval_tests,
    mbpp_program,
    mbpp_tests,
    run_test_program,
)
from moagraph.tasks.grading.math_equiv import (
    equivalent,
    extract_boxed,
    extract_math_answer,
    gsm8k_reference,
    normalize_answer,
)
from moagraph.tasks.grading.sandbox import (
    SandboxCapabilities,
    SandboxError,
    SandboxResult,
    arun_code,
    arun_tests,
    run_code,
    run_tests,
    sandbox_capabilities,
)

__all__ = [
    "SandboxCapabilities",
    "SandboxError",
    "SandboxResult",
    "TestProgram",
    "agrade_program",
    "arun_code",
    "arun_tests",
    "choice_equivalent",
    "equivalent",
    "extract_boxed",
    "extract_choice",
    "extract_code",
    "extract_math_answer",
    "grade_humaneval",
    "grade_mbpp",
    "gsm8k_reference",
    "humaneval_program",
    "humaneval_tests",
    "mbpp_program",
    "mbpp_tests",
    "normalize_answer",
    "run_code",
    "run_test_program",
    "run_tests",
    "sandbox_capabilities",
]
