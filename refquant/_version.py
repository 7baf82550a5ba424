__version__ = "0.2.0"  # the one source of truth: setup.cfg reads it (version = attr: refquant._version.__version__)
