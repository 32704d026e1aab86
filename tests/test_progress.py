"""Progress bars: labelled, and in a notebook they end as text, so a saved notebook refers to no closed
widget (reopened, such an output shows "Error displaying widget: model not found")."""
import nbformat
from nbclient import NotebookClient

from massact_viz.progress import pipeline_progress, progress_bar

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def test_outside_a_kernel_it_is_plain_tqdm(capsys):
    assert list(progress_bar(range(3), desc="things counted", unit="thing")) == [0, 1, 2]
    assert "things counted: 100%" in capsys.readouterr().err


def test_pipeline_progress_labels_the_step_bar_and_gives_the_pipeline_back(tiny_model):
    pipe = tiny_model("flux").pipe
    with pipeline_progress(pipe, True):
        bar = pipe.progress_bar(total=2)
        assert bar.desc == "denoising steps" and bar.unit == "step" and not bar.disable
        bar.close()
    assert "progress_bar" not in vars(pipe)  # the class's own method again
    with pipeline_progress(pipe, False):
        assert pipe.progress_bar(total=2).disable


def test_pipeline_progress_keeps_what_the_user_set_with_set_progress_bar_config(tiny_model):
    import io
    pipe = tiny_model("flux").pipe
    out = io.StringIO()
    pipe.set_progress_bar_config(leave=False, file=out, desc="my steps")
    try:
        with pipeline_progress(pipe, True):
            bar = pipe.progress_bar(total=2)
            assert bar.desc == "my steps" and bar.leave is False and not bar.disable
            bar.update(2)
            bar.close()
        assert "my steps" in out.getvalue()
        pipe.set_progress_bar_config(disable=True)
        with pipeline_progress(pipe, True):
            b = pipe.progress_bar(total=2)
            assert not b.disable   # Model.run(progress=) decides
            b.close()
        with pipeline_progress(pipe, False):
            assert pipe.progress_bar(total=2).disable
    finally:
        pipe.set_progress_bar_config(disable=True)   # as the tiny pipelines are built


def test_in_a_notebook_finished_bars_are_text_and_no_widget_is_left(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import torch; torch.set_num_threads(1)\nimport massact_viz as mv\n"
        "from massact_viz.progress import progress_bar",
        "for _ in progress_bar(range(4), desc='things counted', unit='thing'): pass",
        "for _ in progress_bar(range(4), desc='gone when done', unit='thing', leave=False): pass",
        "model = mv.load('tiny:flux')\nrun = model.run('a fox', num_steps=3, size=(32, 32), "
        "capture=mv.Capture(previews=True), progress=True)",
    )]
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells for o in c.outputs]
    assert not [o for o in outs if o.get("output_type") == "error"], outs
    widgets = [o for o in outs if WIDGET_MIME in o.get("data", {})]
    assert widgets == [], f"progress widgets left in the saved notebook: {widgets}"
    texts = [o["data"]["text/plain"] for o in outs if "text/plain" in o.get("data", {})]
    assert any(t.startswith("things counted: 100%") and "4/4" in t for t in texts), texts
    assert any(t.startswith("denoising steps: 100%") and "3/3" in t for t in texts), texts
    assert not any("gone when done" in t or "previews" in t for t in texts), texts  # leave=False: nothing kept
