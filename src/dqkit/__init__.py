"""dqkit: find out whether a metric drop is real or the pipeline's fault."""

__version__ = "0.1.0"
