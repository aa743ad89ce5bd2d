"""The web UI (`guidekit ui`): service.py does the work without gradio; app.py is the Gradio front end."""
