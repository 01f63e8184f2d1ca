"""``python -m llama_cpp.server`` with moagraph's safe weight-buffer default.

llama-cpp-python's server has no setting for llama.cpp's extra weight buffer
types (AMX / CPU repacking), which crash this build in ``decode`` on CPUs
with AMX. This launcher turns them off (``use_extra_bufts = False``) for every
model the server loads, then runs the stock server with the remaining
arguments::

    python -m moagraph.models.llamacpp_server --model x.gguf --port 8000 [--extra-buffers]

``--extra-buffers`` keeps llama.cpp's default (on), e.g. to compare speed.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    extra = "--extra-buffers" in args
    args = [a for a in args if a != "--extra-buffers"]
    try:
        from llama_cpp.server.__main__ import main as server_main
    except ImportError:
        sys.exit("moagraph.models.llamacpp_server needs llama-cpp-python[server]")
    from moagraph.models.llamacpp import install_buffer_policy

    install_buffer_policy(extra)
    sys.argv = [sys.argv[0], *args]
    server_main()


if __name__ == "__main__":
    main()
