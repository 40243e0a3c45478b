import os

os.environ.setdefault("SLIM_QUIET", "1")
