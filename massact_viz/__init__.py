"""massact_viz: see and steer massive activations inside diffusion transformers.

    import massact_viz as mv
    model = mv.load("tiny:flux")            # or a Hub id, a local pipeline directory, a pipeline, "shapes"
    run = model.run("a red fox in the snow", num_steps=4, seed=0)
    run.stats.top_k(4, layer="double.0")
    run.save("runs/fox"); mv.Run.load("runs/fox")
"""
from .version import __version__  # noqa: E402

import logging as _logging


class _NoTorchvisionNotice(_logging.Filter):
    """transformers warns on every pipeline load that its CLIP/SigLIP image processors fall back to PIL without
    torchvision; the fallback is what this toolkit uses (torchvision has no wheel beside its torch), so the
    red line is one a user cannot act on. Only that notice is dropped."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())

from .capture import Capture, MassActWarning, Raw, TracedCapture, nnsight_capture  # noqa: E402
from .edits import Edit  # noqa: E402
from .errors import MassActError, RunFileError, UnsupportedArchitectureError  # noqa: E402
from .model import Model, default_model, load  # noqa: E402
from .prompts import read_prompts  # noqa: E402
from .run import Run  # noqa: E402
from .stats import STATISTICS, ChannelStats  # noqa: E402

__all__ = ["load", "default_model", "read_prompts", "Model", "Run", "Capture", "Raw", "Edit", "nnsight_capture", "TracedCapture",
           "ChannelStats", "STATISTICS", "MassActError",
           "RunFileError", "UnsupportedArchitectureError", "MassActWarning", "__version__"]
