"""The explorer service: validated knobs, an immutable snapshot of models and galleries, and
one module per tab (search, metrics, subspaces, embedding map, uploads) behind the
:class:`emcl.explorer.service.Explorer` facade. No Gradio here: the UI lives in ``ui/``."""
