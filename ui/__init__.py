"""The Gradio UI: assembly, the knob panel, one module per tab, figures and text."""
