"""Local web pages for the steps of the pipeline done by people.

``web.app.create_app`` builds one FastAPI application; each page is a router module
(``web.labeling``: the hand-labelling tool) registered there, so a later page (the face
editor) is one more router and one more static page. Servers bind to localhost by default.
"""
