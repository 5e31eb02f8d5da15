"""``python -m embplan``: the same command as ``embplan``."""

from .cli import app

if __name__ == "__main__":  # pragma: no branch
    app(prog_name="embplan")
