"""``python -m massact_viz ...`` is the ``massact-viz`` command (so ``accelerate launch -m massact_viz scan ...``
and ``torchrun -m massact_viz ...`` run it on several processes)."""
import sys

from .cli import main

sys.exit(main())
