"""``python -m multimodal``: the ``multimodal`` command (see ``multimodal.tools.cli``)."""
import sys

from multimodal.tools.cli import main

sys.exit(main())
