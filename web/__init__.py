"""Local web pages for the steps of the pipeline done by people.

``web.app.create_app`` builds one FastAPI application; each page is a router module registered
there with its static page: ``web.labeling`` (the hand-labelling tool, ``run_labeling.py``) and
``web.editor`` (the face editor, ``run_editor.py``; its generators, direction sets and judges in
``web.editor_models``, every edit through ``editing.edit``). Servers bind to localhost by default.
"""
