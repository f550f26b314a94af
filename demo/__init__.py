"""The Gradio demo of vidseg_nb (``python demo/app.py``; the Space entry point is ``demo/app.py``)."""
