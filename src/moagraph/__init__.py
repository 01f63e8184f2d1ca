"""moagraph: which LLMs, wired how, give the best answers for the compute you can spend."""

__version__ = "0.1.0"
