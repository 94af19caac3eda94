"""The implementations of seg_plugins' command-line tools (torch and detectron2 loaded).

Each module's ``run(args)`` does the work of one tool on the namespace its parser in
:mod:`seg_plugins_cli` produced, and returns the exit status. Run them through the console
scripts (``seg-plugins-predict``, ...) or the repository's ``tools/*.py``; both parse the
command line first, without importing this package.
"""
