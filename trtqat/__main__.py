"""``python -m trtqat`` is the same as the ``trtqat`` command."""
from .cli import main

if __name__ == "__main__":
    main()
