"""One driver per backup tool, behind the small interface of ``bench.tools.base``."""
