"""One error tree for everything a user can cause.

Every error a user can fix (a bad file, an unknown name, a budget too small, a
misconfigured backend) is a :class:`MoagraphError`, which is a ``ValueError``:
``except ValueError`` keeps working everywhere, and ``except MoagraphError``
catches moagraph's own user errors and nothing else. The message names the
field and the fix; the CLI prints it without a traceback.

The concrete classes live next to the code that raises them (``PoolError`` in
``models/pool.py``, ``StudyError`` in ``search/study.py``, ...) and derive from
one of the four branches below:

>>> from moagraph.errors import ConfigError, MoagraphError
>>> from moagraph.models.pool import PoolError
>>> issubclass(PoolError, ConfigError) and issubclass(PoolError, ValueError)
True
>>> try:
...     raise PoolError("model 'x', field `params_b`: is required; add it")
... except MoagraphError as e:
...     print(type(e).__name__)
PoolError

Failures that are not the user's doing (a backend down after retries: ``BackendError``,
a ``RuntimeError``) are deliberately outside this tree.
"""

from __future__ import annotations

__all__ = ["BudgetError", "ConfigError", "DataError", "MoagraphError", "UnknownNameError"]


class MoagraphError(ValueError):
    """Base of every user-fixable moagraph error; the message says what to change."""


class ConfigError(MoagraphError):
    """A setting, option or file of settings is invalid (pool, graph, router, server, search)."""


class DataError(MoagraphError):
    """A data file (replay recording, task data, labels, run store) is missing or malformed."""


class UnknownNameError(MoagraphError):
    """A name (task, router, optimiser, bundled pool or graph) is not known; lists the known ones."""


class BudgetError(MoagraphError):
    """A plan or a request does not fit its budget; nothing was called."""
