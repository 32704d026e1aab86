"""``python -m massact_viz ...`` is the ``massact-viz`` command (so ``accelerate launch -m massact_viz scan ...``
and ``torchrun -m massact_viz ...`` run it on several processes)."""
import os
import sys

from .cli import main
from .distributed import launched, leave

code = main()
if launched():   # one of several processes: leave the process group, then exit without C++ teardown races
    leave()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
