# widgets_tour.ipynb is run by test_jupyterlab.py inside JupyterLab, not by nbmake (pyproject's --nbmake
# collects every .ipynb under testpaths).
collect_ignore = ["widgets_tour.ipynb"]
